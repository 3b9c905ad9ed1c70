//! Chat templates rendered with minijinja exactly as transformers' `apply_chat_template` renders
//! them (same environment settings, globals and filters), and tokenized the way it tokenizes.
//! Knows nothing about files of chat data or loss masks.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::tokenizer::ChatTokenizer;

/// The Llama-3-style template of the project's tiny Llama tokenizer. `{% generation %}` marks
/// the assistant spans for transformers' `return_assistant_tokens_mask`; this crate ignores it.
pub const LLAMA3_TEMPLATE: &str = r#"{{- bos_token }}
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = none %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if system_message is not none or date_string is defined %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
    {%- if date_string is defined %}
        {{- 'Today Date: ' + date_string + '\n\n' }}
    {%- endif %}
    {{- system_message if system_message is not none else '' }}
    {{- '<|eot_id|>' }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message['role'] not in ['user', 'assistant', 'tool'] %}
        {{- raise_exception('Unexpected role `' + message['role'] + '` at message ' + loop.index0|string) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
    {%- if message['role'] == 'assistant' %}
        {%- generation %}
        {{- message['content'] | trim }}{{- '<|eot_id|>' }}
        {%- endgeneration %}
    {%- else %}
        {{- message['content'] | trim }}{{- '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

/// The Granite-3-style template of the project's tiny Granite tokenizer.
pub const GRANITE_TEMPLATE: &str = r#"{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = 'You are a helpful assistant.' %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- '<|start_of_role|>system<|end_of_role|>' + system_message.strip() + '<|end_of_text|>\n' }}
{%- if tools %}
    {{- '<|start_of_role|>available_tools<|end_of_role|>' + tools | tojson(indent=4) + '<|end_of_text|>\n' }}
{%- endif %}
{%- set ns = namespace(turns=0) %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'assistant' %}
        {%- set ns.turns = ns.turns + 1 %}
        {{- '<|start_of_role|>assistant<|end_of_role|>' }}
        {%- generation %}
        {{- message['content'] + eos_token }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- elif message['role'] in ['user', 'tool'] %}
        {{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}
    {%- else %}
        {{- raise_exception('Unexpected role `' ~ message['role'] ~ '`') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_of_role|>assistant<|end_of_role|>' }}
{%- endif %}
"#;

/// One chat message. Fields besides `role` and `content` (tool calls, names) reach the template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: Default::default(),
        }
    }
}

/// The special tokens transformers passes to every template render (`bos_token`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
}

/// Arguments of one render besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    /// JSON schemas of tools, passed as `tools` (none when absent).
    pub tools: Option<serde_json::Value>,
    /// Extra template variables (`date_string`, …), like transformers' `**kwargs`.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl RenderOptions {
    pub fn generation_prompt(add: bool) -> Self {
        Self {
            add_generation_prompt: add,
            ..Self::default()
        }
    }
}

/// A compiled chat template plus the special tokens it is rendered with.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    name: String,
    source: String,
    special: SpecialTokens,
    env: Environment<'static>,
}

/// transformers' `{% generation %}` tag only records offsets; rendering is unchanged without it.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("%}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let tag = &rest[start..start + len + 2];
        let body = &tag[2..tag.len() - 2];
        let marker = |c: Option<char>| match c {
            Some(c @ ('-' | '+')) => c.to_string(),
            _ => String::new(),
        };
        let (open_ws, close_ws) = (marker(body.chars().next()), marker(body.chars().last()));
        let inner = body.trim_matches(['-', '+']).trim();
        match inner {
            "generation" => {
                write!(out, "{{%{open_ws} if true {close_ws}%}}").expect("string write")
            }
            "endgeneration" => {
                write!(out, "{{%{open_ws} endif {close_ws}%}}").expect("string write")
            }
            _ => out.push_str(tag),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> std::result::Result<Value, Error> {
    // The clock in UTC: the `time` crate reads no local offset without an unsound-prone feature,
    // and the cluster's nodes run in UTC.
    let now = time::OffsetDateTime::now_utc();
    strftime(&now, &format).map(Value::from)
}

/// Python's `datetime.strftime` for the directives chat templates use.
pub fn strftime(t: &time::OffsetDateTime, format: &str) -> std::result::Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month = MONTHS[usize::from(u8::from(t.month())) - 1];
        let day = DAYS[usize::from(t.weekday().number_days_from_monday())];
        match chars.next() {
            Some('Y') => write!(out, "{}", t.year()),
            Some('y') => write!(out, "{:02}", t.year().rem_euclid(100)),
            Some('m') => write!(out, "{:02}", u8::from(t.month())),
            Some('d') => write!(out, "{:02}", t.day()),
            Some('e') => write!(out, "{:2}", t.day()),
            Some('j') => write!(out, "{:03}", t.ordinal()),
            Some('H') => write!(out, "{:02}", t.hour()),
            Some('I') => write!(out, "{:02}", (t.hour() + 11) % 12 + 1),
            Some('p') => write!(out, "{}", if t.hour() < 12 { "AM" } else { "PM" }),
            Some('M') => write!(out, "{:02}", t.minute()),
            Some('S') => write!(out, "{:02}", t.second()),
            Some('B') => write!(out, "{month}"),
            Some('b') => write!(out, "{}", &month[..3]),
            Some('A') => write!(out, "{day}"),
            Some('a') => write!(out, "{}", &day[..3]),
            Some('%') => write!(out, "%"),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive `%{}`",
                        other.map(String::from).unwrap_or_default()
                    ),
                ));
            }
        }
        .expect("string write");
    }
    Ok(out)
}

/// Python's `json.dumps(x, ensure_ascii=False)` (transformers' `tojson`), not minijinja's
/// HTML-escaping one: same separators, indentation and escapes.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.kind() {
            ValueKind::Number => Some(" ".repeat(usize::try_from(v.clone()).unwrap_or(0))),
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: bad indent",
                ));
            }
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if !s.is_none() => {
            let a = s.get_item(&Value::from(0))?;
            let b = s.get_item(&Value::from(1))?;
            (
                a.as_str().unwrap_or(",").to_owned(),
                b.as_str().unwrap_or(":").to_owned(),
            )
        }
        _ => (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        ),
    };
    let fmt = JsonFmt {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    fmt.write(&mut out, &value, 0)?;
    Ok(Value::from(out))
}

struct JsonFmt {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonFmt {
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    }

    fn string(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7e) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        write!(out, "\\u{unit:04x}").expect("string write");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn write(&self, out: &mut String, v: &Value, depth: usize) -> std::result::Result<(), Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if v.is_integer() {
                    write!(out, "{v}").expect("string write");
                } else {
                    let f = f64::try_from(v.clone())?;
                    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                        write!(out, "{f:.1}").expect("string write");
                    } else if f.is_nan() {
                        out.push_str("NaN");
                    } else if f.is_infinite() {
                        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                    } else {
                        write!(out, "{f}").expect("string write");
                    }
                }
            }
            ValueKind::String => self.string(out, v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    self.write(out, item, depth + 1)?;
                }
                self.newline(out, depth);
                out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                out.push('{');
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    match key.as_str() {
                        Some(s) => self.string(out, s),
                        None => self.string(out, &key.to_string()),
                    }
                    out.push_str(&self.key_sep);
                    self.write(out, &v.get_item(key)?, depth + 1)?;
                }
                self.newline(out, depth);
                out.push('}');
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: cannot serialize {v}"),
                ));
            }
        }
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `source` in an environment configured like transformers' (trim_blocks,
    /// lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, Python-style `tojson`,
    /// Python string methods).
    pub fn new(name: &str, source: &str, special: SpecialTokens) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat_template", strip_generation_tags(source))
            .map_err(|e| DataError::Template {
                name: name.to_owned(),
                message: format!("{e:#}"),
            })?;
        Ok(Self {
            name: name.to_owned(),
            source: source.to_owned(),
            special,
            env,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template text as the tokenizer files carry it.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The text transformers' `apply_chat_template(tokenize=False)` returns.
    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<String> {
        let mut ctx = serde_json::Map::new();
        for (k, v) in [
            ("bos_token", &self.special.bos_token),
            ("eos_token", &self.special.eos_token),
            ("unk_token", &self.special.unk_token),
            ("pad_token", &self.special.pad_token),
        ] {
            if let Some(v) = v {
                ctx.insert(k.to_owned(), v.clone().into());
            }
        }
        for (k, v) in &opts.extra {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert(
            "messages".into(),
            serde_json::to_value(messages).expect("messages serialize"),
        );
        ctx.insert(
            "tools".into(),
            opts.tools.clone().unwrap_or(serde_json::Value::Null),
        );
        ctx.insert("documents".into(), serde_json::Value::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            opts.add_generation_prompt.into(),
        );
        let tmpl = self
            .env
            .get_template("chat_template")
            .expect("template added in new");
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| DataError::Template {
                name: self.name.clone(),
                message: format!("{e:#}"),
            })
    }

    /// The ids `apply_chat_template(tokenize=True)` returns: the rendered text encoded without
    /// adding special tokens (the template writes them).
    pub fn apply(
        &self,
        tok: &ChatTokenizer,
        messages: &[Message],
        opts: &RenderOptions,
    ) -> Result<Vec<u32>> {
        tok.encode(&self.render(messages, opts)?, false)
    }
}

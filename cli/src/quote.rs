//! Shell quoting and the character rules for values that go into `#SBATCH` lines, where quoting
//! is not reliable: such values must be plain words or they are rejected.

/// True when `s` needs no quoting in a POSIX shell and is safe in an `#SBATCH` line.
pub fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.,:=@%/+[]".contains(&b))
}

/// Quotes `s` for a POSIX shell: plain words stay as they are, anything else is single-quoted
/// with embedded single quotes as `'\''`.
pub fn shell_quote(s: &str) -> String {
    // `[...]` is a glob pattern to a shell (`job.s[h]` would become `job.sh`); sbatch strips the
    // quotes from `#SBATCH` values, so quoting it is right in both places.
    if is_plain_word(s) && !s.contains(['[', ']']) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_table() {
        let table: &[(&str, &str)] = &[
            ("abc", "abc"),
            ("/a/b-c_1.2", "/a/b-c_1.2"),
            ("", "''"),
            ("a b", "'a b'"),
            ("$(rm -rf /)", "'$(rm -rf /)'"),
            ("it's", r"'it'\''s'"),
            ("a\nb", "'a\nb'"),
            ("`x`;y|z&", "'`x`;y|z&'"),
            ("job.s[h]", "'job.s[h]'"),
        ];
        for (input, want) in table {
            assert_eq!(shell_quote(input), *want, "{input:?}");
        }
    }

    #[test]
    fn quoted_values_survive_a_real_shell() {
        for v in [
            "plain",
            "a b",
            "$(echo pwned)",
            "it's \"q\"",
            "x\ny",
            "`id`",
            "*",
            "[a-z]*",
        ] {
            let script = format!("printf %s {}", shell_quote(v));
            let out = sftctl_slurm::run_cmd(&["sh".into(), "-c".into(), script], None, &[], None)
                .unwrap();
            assert_eq!(out.stdout, v);
        }
    }
}

//! MMLU-format questions (`{"question", "choices": [4], "answer": 0-3, "subject"}` per line) and
//! the prompt lm-evaluation-harness builds for them: the subject description, the first `k`
//! dev questions with their answers, then the test question ending at `Answer:`.

use super::EvalError;
use serde::Deserialize;
use std::path::Path;

/// The four answer letters.
pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Question {
    pub question: String,
    pub choices: Vec<String>,
    pub answer: usize,
    pub subject: String,
}

/// Reads a JSONL file of questions; a bad line is an error naming `path:line`.
pub fn load_questions(path: &Path) -> Result<Vec<Question>, EvalError> {
    let text = fs_err::read_to_string(path)?;
    let mut out = Vec::new();
    let err = |line, message: String| EvalError::Line {
        path: path.display().to_string(),
        line,
        message,
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: Question = serde_json::from_str(line).map_err(|e| err(i + 1, e.to_string()))?;
        if q.choices.len() != 4 {
            return Err(err(
                i + 1,
                format!("{} choices, expected 4", q.choices.len()),
            ));
        }
        if q.answer > 3 {
            return Err(err(i + 1, format!("answer {} is not 0-3", q.answer)));
        }
        out.push(q);
    }
    if out.is_empty() {
        return Err(EvalError::Empty(path.display().to_string()));
    }
    Ok(out)
}

/// `{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:` (the question stripped, as lm-eval's
/// template does).
pub fn question_text(q: &Question) -> String {
    let mut s = q.question.trim().to_owned();
    for (l, c) in LETTERS.iter().zip(&q.choices) {
        s.push_str(&format!("\n{l}. {c}"));
    }
    s.push_str("\nAnswer:");
    s
}

/// The few-shot examples for `q`: the first `k` dev questions of its subject, or the first `k`
/// of the whole dev split when it has none of that subject.
pub fn shots<'a>(q: &Question, dev: &'a [Question], k: usize) -> Vec<&'a Question> {
    let same: Vec<&Question> = dev
        .iter()
        .filter(|d| d.subject == q.subject)
        .take(k)
        .collect();
    if same.is_empty() {
        dev.iter().take(k).collect()
    } else {
        same
    }
}

/// The whole context for `q`: description, shots (`question + " " + letter + "\n\n"` each),
/// then the question, ending at `Answer:`.
pub fn prompt(q: &Question, shots: &[&Question]) -> String {
    let mut s = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        q.subject.replace('_', " ")
    );
    for d in shots {
        s.push_str(&question_text(d));
        s.push(' ');
        s.push_str(LETTERS[d.answer]);
        s.push_str("\n\n");
    }
    s.push_str(&question_text(q));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str, subject: &str, answer: usize) -> Question {
        Question {
            question: text.into(),
            choices: vec!["w".into(), "x".into(), "y".into(), "z".into()],
            answer,
            subject: subject.into(),
        }
    }

    #[test]
    fn prompt_has_lm_evals_layout() {
        let dev = [
            q(" Two? ", "s_a", 1),
            q("Other", "s_b", 0),
            q("Three?", "s_a", 3),
        ];
        let t = q("Four?", "s_a", 0);
        let p = prompt(&t, &shots(&t, &dev, 5));
        assert_eq!(
            p,
            "The following are multiple choice questions (with answers) about s a.\n\n\
             Two?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\n\
             Three?\nA. w\nB. x\nC. y\nD. z\nAnswer: D\n\n\
             Four?\nA. w\nB. x\nC. y\nD. z\nAnswer:"
        );
        // A subject without dev questions takes the first ones of the split.
        let u = q("Five?", "s_c", 0);
        assert_eq!(shots(&u, &dev, 2).len(), 2);
        assert_eq!(shots(&u, &dev, 2)[1].question, "Other");
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        fs_err::write(&p, "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":1,\"subject\":\"s\"}\n{\"question\":\"q\",\"choices\":[\"a\"],\"answer\":0,\"subject\":\"s\"}\n").unwrap();
        let e = load_questions(&p).unwrap_err().to_string();
        assert!(e.ends_with("t.jsonl:2: 1 choices, expected 4"), "{e}");
    }
}

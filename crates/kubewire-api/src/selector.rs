//! Label selectors: the string form of `?labelSelector=` (`app=web,tier!=db,env in (a,b),!legacy`)
//! and the structured `metav1.LabelSelector` (`matchLabels` + `matchExpressions`), both compiled
//! to one [`Selector`] that matches a label map.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A compiled label selector: all requirements must hold (an empty selector matches everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Syntax(String),
    #[error("invalid operator {op:?} in match expression for key {key:?}")]
    UnknownOperator { key: String, op: String },
    #[error("values must be {expected} for operator {op} (key {key:?})")]
    Values {
        key: String,
        op: &'static str,
        expected: &'static str,
    },
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector that matches exactly the given labels (as `matchLabels` does).
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        Self {
            requirements: labels
                .into_iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Operator::In(vec![v.clone()]),
                })
                .collect(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the query-string form, as `k8s.io/apimachinery/pkg/labels.Parse` does.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for clause in split_top_level(input)? {
            let clause = clause.trim();
            if clause.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(clause)?);
        }
        Ok(Self { requirements })
    }

    /// Compiles a structured `metav1.LabelSelector`. `None` (absent) is the caller's business:
    /// upstream, an absent selector means "nothing" in some places and "everything" in others.
    pub fn from_label_selector(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut out = match &sel.match_labels {
            Some(labels) => Self::from_labels(labels),
            None => Self::default(),
        };
        for expr in sel.match_expressions.iter().flatten() {
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            let need_values = |op: &'static str, want: bool| {
                if values.is_empty() == want {
                    Err(SelectorError::Values {
                        key: key.clone(),
                        op,
                        expected: if want { "non-empty" } else { "empty" },
                    })
                } else {
                    Ok(())
                }
            };
            let op = match expr.operator.as_str() {
                "In" => need_values("In", true).map(|_| Operator::In(values.clone()))?,
                "NotIn" => need_values("NotIn", true).map(|_| Operator::NotIn(values.clone()))?,
                "Exists" => need_values("Exists", false).map(|_| Operator::Exists)?,
                "DoesNotExist" => {
                    need_values("DoesNotExist", false).map(|_| Operator::DoesNotExist)?
                }
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key,
                        op: other.to_string(),
                    });
                }
            };
            out.requirements.push(Requirement { key, op });
        }
        Ok(out)
    }
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Operator::LessThan(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// Splits on commas that are not inside `( … )`.
fn split_top_level(input: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| SelectorError::Syntax(input.to_string()))?
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError::Syntax(input.to_string()));
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_requirement(clause: &str) -> Result<Requirement, SelectorError> {
    let syntax = || SelectorError::Syntax(clause.to_string());
    if let Some(key) = clause.strip_prefix('!') {
        let key = checked_key(key.trim(), clause)?;
        return Ok(Requirement {
            key,
            op: Operator::DoesNotExist,
        });
    }
    for (token, is_in) in [(" notin ", false), (" in ", true)] {
        if let Some(pos) = clause.find(token) {
            let key = checked_key(clause[..pos].trim(), clause)?;
            let rest = clause[pos + token.len()..].trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(syntax)?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                return Err(syntax());
            }
            let op = if is_in {
                Operator::In(values)
            } else {
                Operator::NotIn(values)
            };
            return Ok(Requirement { key, op });
        }
    }
    // Longest operators first, so `==` is not read as `=`.
    for token in ["!=", "==", "=", ">", "<"] {
        if let Some(pos) = clause.find(token) {
            let key = checked_key(clause[..pos].trim(), clause)?;
            let value = clause[pos + token.len()..].trim().to_string();
            let op = match token {
                "!=" => Operator::NotIn(vec![value]),
                "==" | "=" => Operator::In(vec![value]),
                _ => {
                    let n = value.parse::<i64>().map_err(|_| syntax())?;
                    if token == ">" {
                        Operator::GreaterThan(n)
                    } else {
                        Operator::LessThan(n)
                    }
                }
            };
            return Ok(Requirement { key, op });
        }
    }
    Ok(Requirement {
        key: checked_key(clause, clause)?,
        op: Operator::Exists,
    })
}

fn checked_key(key: &str, clause: &str) -> Result<String, SelectorError> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(SelectorError::Syntax(clause.to_string()))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match &r.op {
                Operator::In(v) if v.len() == 1 => write!(f, "{}={}", r.key, v[0])?,
                Operator::NotIn(v) if v.len() == 1 => write!(f, "{}!={}", r.key, v[0])?,
                Operator::In(v) => write!(f, "{} in ({})", r.key, v.join(","))?,
                Operator::NotIn(v) => write!(f, "{} notin ({})", r.key, v.join(","))?,
                Operator::Exists => write!(f, "{}", r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
                Operator::GreaterThan(n) => write!(f, "{}>{}", r.key, n)?,
                Operator::LessThan(n) => write!(f, "{}<{}", r.key, n)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = Selector::parse(
            "app=web, tier!=db,env in (prod, staging),zone notin (a),x,!legacy,n>3",
        )
        .unwrap();
        assert_eq!(s.requirements().len(), 7);
        let l = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("x", ""),
            ("zone", "b"),
            ("n", "4"),
        ]);
        assert!(s.matches(&l));
        let mut l2 = l.clone();
        l2.insert("legacy".into(), "1".into());
        assert!(!s.matches(&l2));
        let mut l3 = l.clone();
        l3.insert("tier".into(), "db".into());
        assert!(!s.matches(&l3));
        let mut l4 = l;
        l4.insert("n".into(), "3".into());
        assert!(!s.matches(&l4));
    }

    #[test]
    fn double_equals_and_empty() {
        assert!(Selector::parse("").unwrap().is_everything());
        let s = Selector::parse("a==b").unwrap();
        assert!(s.matches(&labels(&[("a", "b")])));
        assert!(!s.matches(&labels(&[("a", "c")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["a in b", "a in ()", "=x", "a b=c", "a in (x", "n>x"] {
            assert!(Selector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn structured_selector() {
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["dev".into()]),
            }]),
        };
        let s = Selector::from_label_selector(&sel).unwrap();
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        let bad = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: None,
            }]),
        };
        assert!(Selector::from_label_selector(&bad).is_err());
    }

    #[test]
    fn display_round_trips() {
        let text = "app=web,tier!=db,env in (a,b),x,!y";
        let s = Selector::parse(text).unwrap();
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }
}

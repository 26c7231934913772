//! Templates: text with `{path}` placeholders, where `path` names a member of a JSON context
//! by dot-separated keys (`{target}`, `{1}`, `{args.level}`, `{msg.sink}`). `{{` and `}}`
//! are literal braces. Parsed once at start-up so a typo fails the configuration, not a
//! command.

use serde_json::Value;

/// A parsed text template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Field(Vec<String>),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed `{{` in template {text:?}")),
                        }
                    }
                    if name.is_empty() || name.split('.').any(str::is_empty) {
                        return Err(format!("empty placeholder name in template {text:?}"));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(name.split('.').map(String::from).collect()));
                }
                '}' => return Err(format!("unmatched `}}` in template {text:?}")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The text with every placeholder replaced; strings as they are, other values as
    /// compact JSON. A missing member is an error naming it.
    pub fn render(&self, context: &Value) -> Result<String, String> {
        self.render_with(context, |s, out| out.push_str(s))
    }

    /// Like [`Template::render`], but percent-encodes the substituted values (for URLs).
    pub fn render_url(&self, context: &Value) -> Result<String, String> {
        self.render_with(context, percent_encode)
    }

    fn render_with(
        &self,
        context: &Value,
        mut push: impl FnMut(&str, &mut String),
    ) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) => match lookup(context, path)? {
                    Value::String(s) => push(s, &mut out),
                    other => push(&other.to_string(), &mut out),
                },
            }
        }
        Ok(out)
    }

    /// When the template is exactly one placeholder, the value it names (JSON type kept).
    fn whole_value<'a>(&self, context: &'a Value) -> Option<Result<&'a Value, String>> {
        match self.parts.as_slice() {
            [Part::Field(path)] => Some(lookup(context, path)),
            _ => None,
        }
    }
}

fn lookup<'a>(context: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut value = context;
    for key in path {
        value = match value {
            Value::Object(map) => map.get(key.as_str()),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("no value for `{{{}}}`", path.join(".")))?;
    }
    Ok(value)
}

fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A JSON value whose strings are templates: `{"level": "{args.level}"}`.
#[derive(Debug, Clone)]
pub struct JsonTemplate(Node);

#[derive(Debug, Clone)]
enum Node {
    Literal(Value),
    Text(Template),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl JsonTemplate {
    pub fn parse(value: &Value) -> Result<JsonTemplate, String> {
        fn node(value: &Value) -> Result<Node, String> {
            Ok(match value {
                Value::String(s) if s.contains(['{', '}']) => Node::Text(Template::parse(s)?),
                Value::Array(items) => {
                    Node::Array(items.iter().map(node).collect::<Result<_, _>>()?)
                }
                Value::Object(map) => Node::Object(
                    map.iter()
                        .map(|(k, v)| Ok((k.clone(), node(v)?)))
                        .collect::<Result<_, String>>()?,
                ),
                other => Node::Literal(other.clone()),
            })
        }
        node(value).map(JsonTemplate)
    }

    /// The value with every string rendered; a string that is one placeholder becomes the
    /// value it names, with its JSON type.
    pub fn render(&self, context: &Value) -> Result<Value, String> {
        fn render(node: &Node, context: &Value) -> Result<Value, String> {
            Ok(match node {
                Node::Literal(v) => v.clone(),
                Node::Text(t) => match t.whole_value(context) {
                    Some(v) => v?.clone(),
                    None => Value::String(t.render(context)?),
                },
                Node::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|n| render(n, context))
                        .collect::<Result<_, _>>()?,
                ),
                Node::Object(members) => Value::Object(
                    members
                        .iter()
                        .map(|(k, n)| Ok((k.clone(), render(n, context)?)))
                        .collect::<Result<_, String>>()?,
                ),
            })
        }
        render(&self.0, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_take_members_by_path() {
        let t = Template::parse("cmnd/{1}/{name} {{x}} {args.level}").unwrap();
        let ctx = json!({"1": "tasmota", "name": "POWER", "args": {"level": 3}});
        assert_eq!(t.render(&ctx).unwrap(), "cmnd/tasmota/POWER {x} 3");
        let err = Template::parse("{args.missing}").unwrap().render(&ctx);
        assert_eq!(err.unwrap_err(), "no value for `{args.missing}`");
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["{", "a}", "{}", "{a..b}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_encode_substituted_values_only() {
        let t = Template::parse("http://h/x?q={args.q}").unwrap();
        let ctx = json!({"args": {"q": "a b/c"}});
        assert_eq!(t.render_url(&ctx).unwrap(), "http://h/x?q=a%20b%2Fc");
    }

    #[test]
    fn json_templates_keep_the_type_of_whole_placeholders() {
        let t = JsonTemplate::parse(&json!({"on": "{args.on}", "label": "out {args.n}", "k": [1]}))
            .unwrap();
        let ctx = json!({"args": {"on": true, "n": 2}});
        assert_eq!(
            t.render(&ctx).unwrap(),
            json!({"on": true, "label": "out 2", "k": [1]})
        );
    }
}

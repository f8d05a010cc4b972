//! Templated values of tool definitions: `{name}`, `{public_path}`,
//! `{public_url}`, `{owner}` and `{port}` in a tool's command, entrypoint,
//! environment, working directory, user and volume names, filled in per
//! launch.
//!
//! A template is checked when it is read (a registry file, a launch
//! request), never when a container starts: an unknown placeholder, an
//! unclosed `{` or a stray `}` is an error naming the value, not a
//! container started with a literal `{oops}`. `{{` and `}}` stand for
//! literal braces.
//!
//! ```
//! use berth_axum::template::{Template, TemplateVars};
//!
//! let t = Template::parse("--ServerApp.base_url={public_path}").unwrap();
//! let vars = TemplateVars { name: "nb", public_path: "/docker/nb/", public_url: "http://h/docker/nb/", owner: "ann", port: 8888 };
//! assert_eq!(t.expand(&vars), "--ServerApp.base_url=/docker/nb/");
//! assert!(Template::parse("{oops}").unwrap_err().to_string().contains("unknown placeholder {oops}"));
//! assert_eq!(Template::parse("{{\"a\": 1}}").unwrap().expand(&vars), "{\"a\": 1}");
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["name", "public_path", "public_url", "owner", "port"];

/// What `{owner}` expands to for a launch without a user (a server with no
/// login).
pub const ANONYMOUS_OWNER: &str = "anonymous";

/// A placeholder of a [`Template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Name,
    PublicPath,
    PublicUrl,
    Owner,
    Port,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// A string with placeholders, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a string is not a valid template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} in {template:?}")]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// The string as given.
    pub template: String,
}

/// The values placeholders expand to for one launch.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// `{name}`: the container name.
    pub name: &'a str,
    /// `{public_path}`: the path the tool is served under, with a
    /// trailing `/` (`/docker/viz/`, or `/` under hostname routing).
    pub public_path: &'a str,
    /// `{public_url}`: the URL browsers reach it at.
    pub public_url: &'a str,
    /// `{owner}`: the user it is launched for ([`ANONYMOUS_OWNER`] without one).
    pub owner: &'a str,
    /// `{port}`: its HTTP port inside the container.
    pub port: u16,
}

impl Template {
    /// Parses `source`.
    ///
    /// # Errors
    ///
    /// [`TemplateError`] for an unknown placeholder, an unclosed `{`, or a
    /// `}` that closes nothing.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let fail = |message: String| TemplateError { message, template: source.to_owned() };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(fail(format!("unclosed {{ at byte {i} (write {{{{ for a literal brace)")));
                    };
                    let word = &rest[..end];
                    let var = match word {
                        "name" => Var::Name,
                        "public_path" => Var::PublicPath,
                        "public_url" => Var::PublicUrl,
                        "owner" => Var::Owner,
                        "port" => Var::Port,
                        _ => {
                            let known: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
                            return Err(fail(format!(
                                "unknown placeholder {{{word}}} (known: {}; write {{{{ for a literal brace)",
                                known.join(", ")
                            )));
                        }
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                    // Skip the placeholder's characters and its `}`.
                    for _ in 0..=word.chars().count() {
                        chars.next();
                    }
                }
                '}' => return Err(fail(format!("}} at byte {i} closes nothing (write }}}} for a literal brace)"))),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { source: source.to_owned(), parts })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether it uses any placeholder.
    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(_)))
    }

    /// The string with every placeholder filled in.
    pub fn expand(&self, vars: &TemplateVars<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(Var::Name) => out.push_str(vars.name),
                Part::Var(Var::PublicPath) => out.push_str(vars.public_path),
                Part::Var(Var::PublicUrl) => out.push_str(vars.public_url),
                Part::Var(Var::Owner) => out.push_str(vars.owner),
                Part::Var(Var::Port) => out.push_str(&vars.port.to_string()),
            }
        }
        out
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Template::parse(&source).map_err(serde::de::Error::custom)
    }
}

/// Environment variables berth sets itself, which a tool may not set.
pub const RESERVED_ENV: &[&str] = &[
    "BERTH_NAME",
    "BERTH_PUBLIC_PATH",
    "BERTH_PUBLIC_URL",
    berth_manager::ENV_INPUT_JSON,
    berth_manager::ENV_INPUT_JSON_URL,
    berth_manager::ENV_INPUT_JSON_PATH,
];

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, and not
/// one berth sets itself.
///
/// # Errors
///
/// What is wrong with it, in words.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "{name:?} is not a valid environment variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    if RESERVED_ENV.contains(&name) {
        return Err(format!("{name:?} is set by berth itself"));
    }
    Ok(())
}

/// An environment variable name, checked with [`check_env_name`] when
/// deserialized.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EnvName(String);

impl EnvName {
    /// Checks and wraps `name`.
    ///
    /// # Errors
    ///
    /// As [`check_env_name`].
    pub fn new(name: &str) -> Result<Self, String> {
        check_env_name(name).map(|()| EnvName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        EnvName::new(&name).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Template {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A template: {name}, {public_path}, {public_url}, {owner} and {port} are filled in per launch; \
                 {{ and }} are literal braces",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Template {}

impl utoipa::PartialSchema for EnvName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Za-z_][A-Za-z0-9_]*$"))
            .description(Some("An environment variable name, not one berth sets itself"))
            .into()
    }
}

impl utoipa::ToSchema for EnvName {}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: TemplateVars<'static> = TemplateVars {
        name: "nb",
        public_path: "/docker/nb/",
        public_url: "http://h:8/docker/nb/",
        owner: "ann",
        port: 8888,
    };

    #[test]
    fn expands_every_placeholder() {
        let t = Template::parse("{name}|{public_path}|{public_url}|{owner}|{port}|{{x}}|é{name}").unwrap();
        assert_eq!(t.expand(&VARS), "nb|/docker/nb/|http://h:8/docker/nb/|ann|8888|{x}|énb");
        assert!(t.has_placeholders());
        let plain = Template::parse("plain text").unwrap();
        assert!(!plain.has_placeholders());
        assert_eq!(plain.expand(&VARS), "plain text");
        assert_eq!(Template::parse("").unwrap().expand(&VARS), "");
    }

    #[test]
    fn refuses_bad_templates() {
        for (bad, needle) in [
            ("{oops}", "unknown placeholder {oops}"),
            ("a{NAME}b", "unknown placeholder {NAME}"),
            ("{'headers': 1}", "unknown placeholder"),
            ("x{name", "unclosed {"),
            ("x}", "closes nothing"),
            ("{}", "unknown placeholder {}"),
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn serde_round_trip_and_errors() {
        let t: Template = serde_json::from_str("\"{public_path}lab\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"{public_path}lab\"");
        let e = serde_json::from_str::<Template>("\"{x}\"").unwrap_err().to_string();
        assert!(e.contains("unknown placeholder {x}"), "{e}");
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_x", "JUPYTER_TOKEN", "a1"] {
            EnvName::new(ok).unwrap();
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "BERTH_PUBLIC_PATH", "INPUT_JSON"] {
            assert!(EnvName::new(bad).is_err(), "{bad}");
        }
    }
}

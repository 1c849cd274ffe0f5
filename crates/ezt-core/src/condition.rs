//! `when` conditions of workflow steps: a small, safe expression language of our own.
//!
//! ```text
//! steps.charge.response.status == 200 && !exists(input.dry_run)
//! steps.list.response.body.total > 0 || input.force == true
//! steps.a.response.headers.content-type != 'text/html'
//! ```
//!
//! Grammar (lowest precedence first; comparisons do not chain):
//!
//! ```text
//! or      := and ( "||" and )*
//! and     := cmp ( "&&" cmp )*
//! cmp     := unary ( ("==" | "!=" | "<" | "<=" | ">" | ">=") unary )?
//! unary   := "!" unary | primary
//! primary := literal | path | "exists" "(" path ")" | "(" or ")"
//! literal := 'text' | "text" | number | true | false | null
//! path    := name ( "." name | "[" digits "]" | "['" text "']" )*
//! ```
//!
//! A path is the same singular path the templates use (`input.<p>`,
//! `steps.<name>.response.status|headers.<name>|body<p>`); which roots and steps it may name is
//! checked by the workflow at submit, this module only finds the paths ([`Condition::paths`]).
//!
//! Values are JSON values. `==`/`!=` compare any two values (numbers by value, so `200 ==
//! 200.0`); `<`, `<=`, `>`, `>=` compare two numbers or two strings (by bytes), anything else is
//! a type error; `&&`, `||` and `!` take booleans and short-circuit, so
//! `exists(p) && p > 1` never reads a missing `p`. A path with no value is an error
//! ([`EvalError::Unresolved`]) except inside `exists(…)`, which answers whether it has one
//! (`null` included). The whole condition must be a boolean.
//!
//! Cost: at most [`MAX_LEN`] bytes, [`MAX_NODES`] nodes and [`MAX_DEPTH`] levels of nesting,
//! all checked by [`parse`]; evaluation visits each node at most once (no loops, no functions
//! beyond `exists`, no string building), so its cost is bounded by the nodes times the cost of
//! reading one path.
//!
//! Why not CEL (the `cel` crate, used by Hatchet and Inngest for the same purpose): it brings an
//! ANTLR-generated parser and a runtime of its own (a large dependency tree for `ezt-core`,
//! which we keep small and pure), and its cost model (comprehensions, macros, string and list
//! functions, a cost estimator to bound them) exists to tame features a step guard does not
//! need. What a `when` needs is: read a few paths from checkpointed results, compare them with
//! literals, combine with boolean logic, test presence. That fits in one module we can read end
//! to end, property-test for "never panics", and bound statically by its size; the paths are
//! exactly the template paths, so one rule set (ancestors only, non-blocking steps unreadable)
//! covers both.

use std::fmt;

use serde_json::Value;

/// Longest condition, bytes.
pub const MAX_LEN: usize = 1024;
/// Most nodes (literals, paths, operators) in one condition.
pub const MAX_NODES: usize = 64;
/// Deepest nesting (parentheses and `!`).
pub const MAX_DEPTH: usize = 16;

/// A condition that parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    root: Node,
    paths: Vec<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Lit(Value),
    Path(String),
    Exists(String),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(Op, Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// Why a condition did not parse: where (1-based character column) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based character column of the problem.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Why a condition could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// A path read outside `exists(…)` has no value.
    Unresolved(String),
    /// An operator got values of the wrong type, or the result is not a boolean.
    Type(String),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Unresolved(p) => write!(f, "{p} has no value"),
            EvalError::Type(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EvalError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Not,
    And,
    Or,
    Cmp(Op),
    Lit(Value),
    Path(String),
    Exists,
}

/// Parses `src`, checking the cost bounds.
pub fn parse(src: &str) -> Result<Condition, ParseError> {
    let column = |byte: usize| src[..byte.min(src.len())].chars().count() + 1;
    if src.len() > MAX_LEN {
        return Err(ParseError {
            column: 1,
            message: format!("longer than {MAX_LEN} bytes"),
        });
    }
    let toks = lex(src).map_err(|(at, message)| ParseError {
        column: column(at),
        message,
    })?;
    let mut p = Parser {
        toks: &toks,
        i: 0,
        nodes: 0,
        depth: 0,
        paths: Vec::new(),
        end: src.len(),
    };
    let root = p.or().map_err(|(at, message)| ParseError {
        column: column(at),
        message,
    })?;
    if let Some((at, t)) = toks.get(p.i) {
        return Err(ParseError {
            column: column(*at),
            message: format!("unexpected {} after a complete condition", describe(t)),
        });
    }
    let paths = p.paths.into_iter().map(|(at, s)| (column(at), s)).collect();
    Ok(Condition { root, paths })
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Not => "'!'".into(),
        Tok::And => "'&&'".into(),
        Tok::Or => "'||'".into(),
        Tok::Cmp(op) => format!("'{}'", op.text()),
        Tok::Lit(v) => format!("the literal {v}"),
        Tok::Path(p) => format!("the path {p}"),
        Tok::Exists => "exists".into(),
    }
}

type Lexed = Vec<(usize, Tok)>;

fn lex(src: &str) -> Result<Lexed, (usize, String)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let two = b.get(i + 1).copied();
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'&' if two == Some(b'&') => {
                i += 2;
                Tok::And
            }
            b'|' if two == Some(b'|') => {
                i += 2;
                Tok::Or
            }
            b'=' if two == Some(b'=') => {
                i += 2;
                Tok::Cmp(Op::Eq)
            }
            b'!' if two == Some(b'=') => {
                i += 2;
                Tok::Cmp(Op::Ne)
            }
            b'!' => {
                i += 1;
                Tok::Not
            }
            b'<' | b'>' => {
                let eq = two == Some(b'=');
                i += 1 + usize::from(eq);
                Tok::Cmp(match (c, eq) {
                    (b'<', false) => Op::Lt,
                    (b'<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                })
            }
            b'\'' | b'"' => {
                let (s, next) = string(src, i)?;
                i = next;
                Tok::Lit(Value::String(s))
            }
            b'-' | b'0'..=b'9' => {
                let mut j = i + 1;
                while j < b.len() && matches!(b[j], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    j += 1;
                }
                let n: serde_json::Number = serde_json::from_str(&src[i..j])
                    .map_err(|_| (i, format!("{:?} is not a number", &src[i..j])))?;
                i = j;
                Tok::Lit(Value::Number(n))
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' => {
                i = path_end(src, i)?;
                match &src[start..i] {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "null" => Tok::Lit(Value::Null),
                    "exists" => Tok::Exists,
                    p => Tok::Path(p.to_string()),
                }
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err((i, format!("unexpected character {ch:?}")));
            }
        };
        out.push((start, tok));
    }
    Ok(out)
}

/// A quoted string starting at `i` (its quote): its text and the byte after it.
fn string(src: &str, i: usize) -> Result<(String, usize), (usize, String)> {
    let quote = src.as_bytes()[i] as char;
    let mut out = String::new();
    let mut chars = src[i + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, i + 1 + k + 1)),
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '\'' | '"'))) => out.push(e),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((k2, e)) => {
                    return Err((
                        i + 1 + k2,
                        format!("unknown escape \\{e} (use \\\\ \\' \\\" \\n \\t \\r)"),
                    ))
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err((i, "unterminated string".into()))
}

/// The end of the path starting at `i`: names of letters, digits, `_` and `-`, joined by `.`,
/// and `[digits]` or `['text']` segments.
fn path_end(src: &str, mut i: usize) -> Result<usize, (usize, String)> {
    let b = src.as_bytes();
    if b[i] == b'$' {
        if b.get(i + 1) != Some(&b'.') {
            return Err((i, "'$' must start '$.<path>'".into()));
        }
        i += 2;
    }
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-') {
            i += 1;
        }
        if i == start && b.get(i) != Some(&b'[') {
            return Err((i, "expected a name in the path".into()));
        }
        while b.get(i) == Some(&b'[') {
            let open = i;
            if b.get(i + 1) == Some(&b'\'') {
                let close = src[i + 2..]
                    .find('\'')
                    .ok_or((open, "unclosed ['…'] in the path".to_string()))?;
                i = i + 2 + close + 1;
            } else {
                i += 1;
                let digits = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i == digits {
                    return Err((open, "expected an index or a quoted name in [ ]".into()));
                }
            }
            if b.get(i) != Some(&b']') {
                return Err((open, "unclosed [ in the path".into()));
            }
            i += 1;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            continue;
        }
        return Ok(i);
    }
}

struct Parser<'a> {
    toks: &'a [(usize, Tok)],
    i: usize,
    nodes: usize,
    depth: usize,
    paths: Vec<(usize, String)>,
    end: usize,
}

type PResult = Result<Node, (usize, String)>;

impl Parser<'_> {
    fn at(&self) -> usize {
        self.toks.get(self.i).map_or(self.end, |(a, _)| *a)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(_, t)| t)
    }

    fn node(&mut self, n: Node) -> PResult {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err((self.at(), format!("more than {MAX_NODES} nodes")));
        }
        Ok(n)
    }

    fn deeper(&mut self) -> Result<(), (usize, String)> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((self.at(), format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn or(&mut self) -> PResult {
        let mut l = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.i += 1;
            let r = self.and()?;
            l = self.node(Node::Or(Box::new(l), Box::new(r)))?;
        }
        Ok(l)
    }

    fn and(&mut self) -> PResult {
        let mut l = self.cmp()?;
        while self.peek() == Some(&Tok::And) {
            self.i += 1;
            let r = self.cmp()?;
            l = self.node(Node::And(Box::new(l), Box::new(r)))?;
        }
        Ok(l)
    }

    fn cmp(&mut self) -> PResult {
        let l = self.unary()?;
        let Some(Tok::Cmp(op)) = self.peek().cloned() else {
            return Ok(l);
        };
        self.i += 1;
        let r = self.unary()?;
        if let Some(Tok::Cmp(_)) = self.peek() {
            return Err((
                self.at(),
                "comparisons do not chain: use && (a < b && b < c)".into(),
            ));
        }
        self.node(Node::Cmp(op, Box::new(l), Box::new(r)))
    }

    fn unary(&mut self) -> PResult {
        if self.peek() == Some(&Tok::Not) {
            self.i += 1;
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return self.node(Node::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult {
        let at = self.at();
        let Some(t) = self.peek().cloned() else {
            return Err((at, "expected a value, a path, exists(…) or '('".into()));
        };
        self.i += 1;
        match t {
            Tok::Lit(v) => self.node(Node::Lit(v)),
            Tok::Path(p) => {
                self.paths.push((at, p.clone()));
                self.node(Node::Path(p))
            }
            Tok::Exists => {
                if self.peek() != Some(&Tok::LParen) {
                    return Err((self.at(), "expected '(' after exists".into()));
                }
                self.i += 1;
                let pat = self.at();
                let Some(Tok::Path(p)) = self.peek().cloned() else {
                    return Err((pat, "exists(…) takes one path".into()));
                };
                self.i += 1;
                if self.peek() != Some(&Tok::RParen) {
                    return Err((self.at(), "expected ')' after the path of exists(".into()));
                }
                self.i += 1;
                self.paths.push((pat, p.clone()));
                self.node(Node::Exists(p))
            }
            Tok::LParen => {
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Tok::RParen) {
                    return Err((self.at(), "expected ')'".into()));
                }
                self.i += 1;
                Ok(inner)
            }
            other => Err((
                at,
                format!(
                    "unexpected {}: expected a value, a path, exists(…) or '('",
                    describe(&other)
                ),
            )),
        }
    }
}

impl Condition {
    /// Every path the condition reads (also inside `exists`), with its 1-based column, in
    /// source order.
    pub fn paths(&self) -> &[(usize, String)] {
        &self.paths
    }

    /// Decides the condition; `lookup` answers a path's value (`None`: it has none).
    pub fn eval(&self, lookup: &mut dyn FnMut(&str) -> Option<Value>) -> Result<bool, EvalError> {
        match eval(&self.root, lookup)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError::Type(format!(
                "the condition is {}, not true or false",
                kind(&other)
            ))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn boolean(v: Value, what: &str) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(EvalError::Type(format!(
            "{what} takes true or false, got {}",
            kind(&other)
        ))),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn eval(n: &Node, lookup: &mut dyn FnMut(&str) -> Option<Value>) -> Result<Value, EvalError> {
    Ok(match n {
        Node::Lit(v) => v.clone(),
        Node::Path(p) => lookup(p).ok_or_else(|| EvalError::Unresolved(p.clone()))?,
        Node::Exists(p) => Value::Bool(lookup(p).is_some()),
        Node::Not(x) => Value::Bool(!boolean(eval(x, lookup)?, "!")?),
        Node::And(l, r) => {
            Value::Bool(boolean(eval(l, lookup)?, "&&")? && boolean(eval(r, lookup)?, "&&")?)
        }
        Node::Or(l, r) => {
            Value::Bool(boolean(eval(l, lookup)?, "||")? || boolean(eval(r, lookup)?, "||")?)
        }
        Node::Cmp(op, l, r) => {
            let (a, b) = (eval(l, lookup)?, eval(r, lookup)?);
            let ord = match (&a, &b) {
                _ if matches!(op, Op::Eq | Op::Ne) => None,
                (Value::Number(x), Value::Number(y)) => {
                    let (x, y) = (
                        x.as_f64().unwrap_or(f64::NAN),
                        y.as_f64().unwrap_or(f64::NAN),
                    );
                    Some(x.partial_cmp(&y))
                }
                (Value::String(x), Value::String(y)) => Some(Some(x.as_str().cmp(y.as_str()))),
                _ => {
                    return Err(EvalError::Type(format!(
                        "{} compares two numbers or two strings, got {} and {}",
                        op.text(),
                        kind(&a),
                        kind(&b)
                    )))
                }
            };
            use std::cmp::Ordering::{Greater, Less};
            Value::Bool(match (op, ord) {
                (Op::Eq, _) => equal(&a, &b),
                (Op::Ne, _) => !equal(&a, &b),
                (Op::Lt, Some(Some(o))) => o == Less,
                (Op::Le, Some(Some(o))) => o != Greater,
                (Op::Gt, Some(Some(o))) => o == Greater,
                (Op::Ge, Some(Some(o))) => o != Less,
                // Not comparable (no NaN reaches here from JSON, but stay total).
                (_, _) => false,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn run(src: &str, env: &Value) -> Result<bool, String> {
        let c = parse(src).map_err(|e| e.to_string())?;
        c.eval(&mut |p: &str| {
            let mut v = env;
            for seg in p.split('.') {
                v = v.get(seg)?;
            }
            Some(v.clone())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn evaluates_comparisons_logic_and_presence() {
        let env = json!({"input": {"n": 3, "s": "b", "t": true, "z": null},
                          "steps": {"a": {"response": {"status": 200}}}});
        let cases = [
            ("steps.a.response.status == 200", true),
            ("steps.a.response.status == 200.0", true),
            ("steps.a.response.status != 200", false),
            ("input.n < 4 && input.n >= 3", true),
            ("input.n > 3 || input.s == 'b'", true),
            ("input.s < \"c\" && input.s > 'a'", true),
            ("!input.t", false),
            ("!!input.t", true),
            ("!(input.n == 3)", false),
            ("exists(input.z) && input.z == null", true),
            ("exists(input.nope)", false),
            ("!exists(input.nope) || input.nope == 1", true),
            ("input.n == -3 || input.n == 3e0", true),
            ("(input.n == 1 || input.n == 3) && true", true),
            ("false && input.nope == 1", false),
        ];
        for (src, want) in cases {
            assert_eq!(run(src, &env), Ok(want), "{src}");
        }
    }

    #[test]
    fn unresolved_paths_and_type_errors_are_errors() {
        let env = json!({"input": {"n": 3, "s": "x"}});
        assert_eq!(
            run("input.nope == 1", &env),
            Err("input.nope has no value".into())
        );
        let e = run("input.n < input.s", &env).unwrap_err();
        assert!(e.contains("two numbers or two strings"), "{e}");
        let e = run("input.n", &env).unwrap_err();
        assert!(e.contains("not true or false"), "{e}");
        let e = run("input.n && true", &env).unwrap_err();
        assert!(e.contains("&& takes true or false"), "{e}");
    }

    #[test]
    fn bad_conditions_say_where() {
        let cases = [
            ("input.a ==", 11, "expected a value"),
            ("input.a = 1", 9, "unexpected character '='"),
            ("(input.a == 1", 14, "expected ')'"),
            ("input.a == 'x", 12, "unterminated string"),
            ("1 < 2 < 3", 7, "do not chain"),
            ("exists(1)", 8, "takes one path"),
            ("input.a == 1 1", 14, "after a complete condition"),
            ("input.a[x] == 1", 8, "expected an index"),
            ("input.é == 1", 7, "expected a name"),
            ("'a\\q' == 'a'", 4, "unknown escape"),
            ("", 1, "expected a value"),
        ];
        for (src, col, msg) in cases {
            let e = parse(src).expect_err(src);
            assert_eq!(e.column, col, "{src}: {e}");
            assert!(e.message.contains(msg), "{src}: {e}");
        }
    }

    #[test]
    fn the_cost_is_bounded() {
        let long = format!("input.a == '{}'", "x".repeat(MAX_LEN));
        assert!(parse(&long).unwrap_err().message.contains("longer than"));
        let deep = format!(
            "{}true{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        let nots = format!("{}true", "!".repeat(MAX_DEPTH + 1));
        assert!(parse(&nots).unwrap_err().message.contains("nested deeper"));
        let wide = vec!["true"; MAX_NODES].join(" && ");
        assert!(parse(&wide).unwrap_err().message.contains("nodes"));
        let ok = vec!["true"; MAX_NODES / 2].join(" && ");
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn paths_are_listed_with_their_columns() {
        let c = parse("exists(steps.a.response.body['x y'][0]) && input.$x == 1").unwrap_err();
        assert!(c.message.contains("expected a name"), "{c}");
        let c = parse("exists(steps.a.response.body['x y'][0]) && $.input.b-c == 1").unwrap();
        assert_eq!(
            c.paths(),
            &[
                (8, "steps.a.response.body['x y'][0]".to_string()),
                (44, "$.input.b-c".to_string())
            ]
        );
    }

    fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("input.a".to_string()),
            Just("steps.s.response.status".to_string()),
            Just("exists(input.b)".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            (-1000i64..1000).prop_map(|n| n.to_string()),
            "[a-z ]{0,5}".prop_map(|s| format!("'{s}'")),
        ]
    }

    fn expr() -> impl Strategy<Value = String> {
        leaf().prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || ({b})")),
                inner.clone().prop_map(|a| format!("!({a})")),
                (
                    inner.clone(),
                    prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]),
                    inner
                )
                    .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            ]
        })
    }

    fn any_json() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,4}".prop_map(Value::String),
            Just(json!([1, 2])),
            Just(json!({"k": 1})),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "[a-z0-9.\\[\\]'\"()!&|=<> \\\\-]{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn generated_conditions_parse_and_evaluate_without_panicking(
            src in expr(),
            vals in prop::collection::vec(prop::option::of(any_json()), 3),
        ) {
            let c = parse(&src);
            // Every generated condition parses, unless it passes a cost bound.
            if let Err(e) = &c {
                let m = &e.message;
                prop_assert!(m.contains("nodes") || m.contains("nested") || m.contains("longer"), "{src}: {e}");
            }
            if let Ok(c) = c {
                let mut k = 0;
                let _ = c.eval(&mut |_p: &str| { k += 1; vals[k % 3].clone() });
            }
        }
    }
}

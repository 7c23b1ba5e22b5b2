//! A small FHIRPath evaluator over `serde_json` values: the subset the R4 SearchParameter
//! expressions use (paths, choice elements, `where`, `as`/`is`/`ofType`, `resolve() is X`,
//! `|`, `exists()`, `extension('url')`, …), evaluated without a FHIR model.
//!
//! Supported: member paths (arrays flattened; a capitalised first step such as `Patient`,
//! `Resource` or `DomainResource` filters on `resourceType`), `[n]`, `$this`, `%resource` /
//! `%rootResource` / `%context`; string, number and boolean literals (as comparison operands
//! and function arguments); operators `|`, `=`, `!=`, `~`, `!~`, `is`, `as`, `contains`, `in`,
//! `and`, `or`, `xor`, `implies`; functions `where`, `select`, `exists`, `empty`, `not`,
//! `first`, `last`, `hasValue`, `as`, `ofType`, `is`, `extension`, `resolve` (only as
//! `resolve() is T`), and the string functions `contains`, `startsWith`, `endsWith`.
//!
//! Refused at compile time (the parameter is then not supported): everything else, notably
//! `memberOf` (needs a terminology server), arithmetic, ordering comparisons and `iif`.
//!
//! Without a model, a node's type is known only for choice elements (`valueQuantity` →
//! `Quantity`), resources (`resourceType`) and `resolve()` results (the type named in the
//! reference), so `is`/`as`/`ofType` on any other node never match. Choice elements are found by
//! name (the R4 choice element names and the type suffixes each allows), so asking for an element
//! a type does not have (`Library.effective`) can pick up a same-named sibling
//! (`effectivePeriod`); no R4 expression does that. Primitive extensions (`_given`) are ignored.

use std::ops::ControlFlow;

use serde_json::{Map, Value};

/// One result node.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// The JSON value.
    pub value: &'a Value,
    /// Its FHIR type when known: from a choice element's key suffix, `resourceType`, or the type
    /// a resolved reference names.
    pub type_name: Option<&'a str>,
}

/// A compiled FHIRPath expression (immutable, `Send + Sync`).
#[derive(Debug, Clone)]
pub struct Expr {
    ast: Ast,
}

/// Compile an expression; the error names the expression and what is wrong with it.
pub fn compile(expression: &str) -> Result<Expr, String> {
    let fail = |msg: String| format!("FHIRPath `{expression}`: {msg}");
    let tokens = lex(expression).map_err(fail)?;
    let mut parser = Parser { tokens, pos: 0 };
    let ast = parser.expression(0).map_err(fail)?;
    if parser.pos < parser.tokens.len() {
        return Err(fail(format!(
            "unexpected `{}` at offset {}",
            parser.tokens[parser.pos].text, parser.tokens[parser.pos].offset
        )));
    }
    check(&ast, false).map_err(fail)?;
    Ok(Expr { ast })
}

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

fn bool_node(b: bool) -> Node<'static> {
    Node {
        value: if b { &TRUE } else { &FALSE },
        type_name: Some("boolean"),
    }
}

type Sink<'s, 'a> = &'s mut dyn FnMut(Node<'a>) -> ControlFlow<()>;

impl Expr {
    /// Evaluate on a resource (the root context and `%resource`).
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Vec<Node<'a>> {
        let root = Node {
            value: resource,
            type_name: None,
        };
        self.evaluate_on(root, resource)
    }

    /// Evaluate with `focus` as the context (e.g. a composite parameter's component
    /// expression on one of its context nodes); `%resource` is `resource`.
    pub fn evaluate_on<'a>(&self, focus: Node<'a>, resource: &'a Value) -> Vec<Node<'a>> {
        let env = Env {
            root: resource,
            root_type: resource_type(resource),
        };
        let mut out = Vec::new();
        if let Ast::Union(branches) = &self.ast {
            union_into(branches, focus, &env, &mut out);
        } else {
            let _ = each(&self.ast, focus, &env, &mut |n| {
                out.push(n);
                ControlFlow::Continue(())
            });
        }
        for node in &mut out {
            if node.type_name.is_none() {
                node.type_name = resource_type(node.value);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax tree

#[derive(Debug, Clone)]
enum Ast {
    /// A start followed by node-wise steps (streamed without intermediate collections).
    Path { start: Start, steps: Vec<Step> },
    /// A string or number literal (only as an operand or argument), or a boolean.
    Lit(Value),
    /// `a | b | …`, duplicates removed.
    Union(Vec<Ast>),
    /// `=`, `!=`, `~`, `!~`.
    Equal {
        left: Box<Ast>,
        right: Box<Ast>,
        negate: bool,
        equivalent: bool,
    },
    /// `left contains right` (and `right in left`).
    Member { left: Box<Ast>, right: Box<Ast> },
    /// `and`, `or`, `xor`, `implies`.
    Logic {
        op: Logic,
        left: Box<Ast>,
        right: Box<Ast>,
    },
    /// `x is T` / `x.is(T)`.
    Is { operand: Box<Ast>, ty: TypeSpec },
    /// A function over the whole input collection.
    Agg { input: Box<Ast>, agg: Agg },
}

#[derive(Debug, Clone)]
enum Start {
    /// The focus (`$this`, or the resource at the top level).
    Focus,
    /// `%resource`.
    Root,
    /// A parenthesised or aggregate sub-expression.
    Sub(Box<Ast>),
}

#[derive(Debug, Clone)]
enum Step {
    /// A child element; `choice` holds the allowed type suffixes for a choice element name.
    Child {
        name: Box<str>,
        choice: Option<Option<&'static [&'static str]>>,
    },
    /// A capitalised name: keeps resources of that type.
    TypeName(Box<str>),
    /// `as`, `ofType`.
    OfType(TypeSpec),
    /// `where(criteria)`.
    Where(Box<Ast>),
    /// `select(projection)`.
    Select(Box<Ast>),
    /// `extension('url')`.
    Extension(Box<str>),
    /// `resolve()`: the reference itself, typed by the target type its `reference` names.
    Resolve,
}

#[derive(Debug, Clone)]
enum Agg {
    First,
    Last,
    Index(usize),
    Exists(Option<Box<Ast>>),
    Empty,
    Not,
    HasValue,
    Str(StrFn, Box<str>),
}

#[derive(Debug, Clone, Copy)]
enum StrFn {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Logic {
    And,
    Or,
    Xor,
    Implies,
}

#[derive(Debug, Clone)]
struct TypeSpec {
    /// `Some("System")` / `Some("FHIR")` when qualified.
    namespace: Option<Box<str>>,
    name: Box<str>,
}

/// Literals may only appear where their value is compared; `resolve()` only before `is`.
fn check(ast: &Ast, operand: bool) -> Result<(), String> {
    match ast {
        Ast::Lit(Value::Bool(_)) => Ok(()),
        Ast::Lit(_) if operand => Ok(()),
        Ast::Lit(v) => Err(format!(
            "the literal {v} is only supported as an operand of a comparison"
        )),
        Ast::Path { start, steps } => {
            if let Start::Sub(sub) = start {
                check(sub, false)?;
            }
            for step in steps {
                match step {
                    Step::Where(a) | Step::Select(a) => check(a, false)?,
                    Step::Resolve => {
                        return Err("resolve() is only supported as `resolve() is Type`".into());
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        Ast::Union(items) => items.iter().try_for_each(|a| check(a, false)),
        Ast::Equal { left, right, .. } | Ast::Member { left, right } => {
            check(left, true)?;
            check(right, true)
        }
        Ast::Logic { left, right, .. } => {
            check(left, false)?;
            check(right, false)
        }
        Ast::Is { operand, .. } => match &**operand {
            // `resolve() is T`: the one place resolve() may appear, as the last step.
            Ast::Path { start, steps } if matches!(steps.last(), Some(Step::Resolve)) => check(
                &Ast::Path {
                    start: start.clone(),
                    steps: steps[..steps.len() - 1].to_vec(),
                },
                false,
            ),
            other => check(other, false),
        },
        Ast::Agg { input, agg } => {
            check(input, false)?;
            match agg {
                Agg::Exists(Some(a)) => check(a, false),
                _ => Ok(()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident,
    /// A backtick-delimited identifier (never a keyword).
    Quoted,
    Str,
    Num,
    Var,
    Env,
    Sym,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    /// Identifier name, string contents (unescaped), number text, `$`/`%` name, or symbol.
    text: String,
    offset: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, String> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let ident_end = |mut j: usize| {
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            j
        };
        let (kind, text) = if c.is_ascii_alphabetic() || c == b'_' {
            i = ident_end(i);
            (Tok::Ident, src[start..i].to_string())
        } else if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            (Tok::Num, src[start..i].to_string())
        } else if c == b'\'' || c == b'`' {
            let (text, end) = quoted(src, i)?;
            i = end;
            (if c == b'`' { Tok::Quoted } else { Tok::Str }, text)
        } else if c == b'$' || c == b'%' {
            i += 1;
            let text = if bytes.get(i) == Some(&b'`') || bytes.get(i) == Some(&b'\'') {
                let (text, end) = quoted(src, i)?;
                i = end;
                text
            } else {
                i = ident_end(i);
                src[start + 1..i].to_string()
            };
            if text.is_empty() {
                return Err(format!(
                    "a name must follow `{}` at offset {start}",
                    c as char
                ));
            }
            (if c == b'$' { Tok::Var } else { Tok::Env }, text)
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let sym = if ["!=", "!~", "<=", ">="].contains(&two) {
                two
            } else if b".()[],|=~<>+-*/&".contains(&c) {
                &src[i..i + 1]
            } else {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(format!("unexpected character `{ch}` at offset {i}"));
            };
            i += sym.len();
            (Tok::Sym, sym.to_string())
        };
        out.push(Token {
            kind,
            text,
            offset: start,
        });
    }
    Ok(out)
}

/// A `'…'` or `` `…` `` token starting at `start`: its unescaped text and the end offset.
fn quoted(src: &str, start: usize) -> Result<(String, usize), String> {
    let quote = src.as_bytes()[start] as char;
    let mut text = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((j, ch)) = chars.next() {
        match ch {
            c if c == quote => return Ok((text, start + 1 + j + 1)),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('r') => text.push('\r'),
                Some('f') => text.push('\u{c}'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("bad \\u escape at offset {start}"))?;
                    text.push(code);
                }
                Some(other) => text.push(other),
                None => break,
            },
            c => text.push(c),
        }
    }
    Err(format!("unterminated {quote}…{quote} at offset {start}"))
}

// ---------------------------------------------------------------------------------------------
// Parser (precedence climbing; FHIRPath operator precedence, lowest first)

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Binary operator precedence levels (higher binds tighter).
fn binary_level(tok: &Token) -> Option<u8> {
    Some(match (&tok.kind, tok.text.as_str()) {
        (Tok::Ident, "implies") => 1,
        (Tok::Ident, "or" | "xor") => 2,
        (Tok::Ident, "and") => 3,
        (Tok::Ident, "in" | "contains") => 4,
        (Tok::Sym, "=" | "!=" | "~" | "!~") => 5,
        (Tok::Sym, "<" | ">" | "<=" | ">=") => 6,
        (Tok::Sym, "|") => 7,
        (Tok::Ident, "is" | "as") => 8,
        (Tok::Sym, "+" | "-" | "&") => 9,
        (Tok::Sym, "*" | "/") | (Tok::Ident, "div" | "mod") => 10,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn at_sym(&self, sym: &str) -> bool {
        self.peek()
            .is_some_and(|t| t.kind == Tok::Sym && t.text == sym)
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), String> {
        if self.at_sym(sym) {
            self.pos += 1;
            Ok(())
        } else {
            Err(match self.peek() {
                Some(t) => format!(
                    "expected `{sym}` at offset {}, found `{}`",
                    t.offset, t.text
                ),
                None => format!("expected `{sym}` at the end"),
            })
        }
    }

    fn expression(&mut self, min_level: u8) -> Result<Ast, String> {
        let mut left = self.postfix()?;
        while let Some(tok) = self.peek().cloned() {
            let Some(level) = binary_level(&tok) else {
                break;
            };
            if level <= min_level {
                break;
            }
            self.pos += 1;
            let op = tok.text.as_str();
            if op == "is" || op == "as" {
                let ty = self.type_spec()?;
                left = if op == "is" {
                    Ast::Is {
                        operand: Box::new(left),
                        ty,
                    }
                } else {
                    push_step(left, Step::OfType(ty))
                };
                continue;
            }
            let right = self.expression(level)?;
            left = match op {
                "|" => match left {
                    Ast::Union(mut items) => {
                        items.push(right);
                        Ast::Union(items)
                    }
                    other => Ast::Union(vec![other, right]),
                },
                "=" | "!=" | "~" | "!~" => Ast::Equal {
                    left: Box::new(left),
                    right: Box::new(right),
                    negate: op.starts_with('!'),
                    equivalent: op.ends_with('~'),
                },
                "contains" => Ast::Member {
                    left: Box::new(left),
                    right: Box::new(right),
                },
                "in" => Ast::Member {
                    left: Box::new(right),
                    right: Box::new(left),
                },
                "and" | "or" | "xor" | "implies" => Ast::Logic {
                    op: match op {
                        "and" => Logic::And,
                        "or" => Logic::Or,
                        "xor" => Logic::Xor,
                        _ => Logic::Implies,
                    },
                    left: Box::new(left),
                    right: Box::new(right),
                },
                _ => {
                    return Err(format!(
                        "operator `{op}` (offset {}) is not supported",
                        tok.offset
                    ));
                }
            };
        }
        Ok(left)
    }

    fn type_spec(&mut self) -> Result<TypeSpec, String> {
        let first = self.identifier("a type name")?;
        if self.at_sym(".") {
            self.pos += 1;
            let name = self.identifier("a type name")?;
            return Ok(TypeSpec {
                namespace: Some(first.into()),
                name: name.into(),
            });
        }
        Ok(TypeSpec {
            namespace: None,
            name: first.into(),
        })
    }

    fn identifier(&mut self, what: &str) -> Result<String, String> {
        match self.peek() {
            Some(t) if matches!(t.kind, Tok::Ident | Tok::Quoted) => {
                let name = t.text.clone();
                self.pos += 1;
                Ok(name)
            }
            Some(t) => Err(format!(
                "expected {what} at offset {}, found `{}`",
                t.offset, t.text
            )),
            None => Err(format!("expected {what} at the end")),
        }
    }

    /// A term followed by `.member`, `.function(…)` and `[index]`.
    fn postfix(&mut self) -> Result<Ast, String> {
        let mut ast = self.term()?;
        loop {
            if self.at_sym(".") {
                self.pos += 1;
                let offset = self.peek().map_or(0, |t| t.offset);
                let quoted = self.peek().is_some_and(|t| t.kind == Tok::Quoted);
                let name = self.identifier("a name after `.`")?;
                ast = if !quoted && self.at_sym("(") {
                    self.function(ast, &name, offset)?
                } else {
                    push_step(ast, member_step(&name))
                };
            } else if self.at_sym("[") {
                self.pos += 1;
                let index = match self.peek() {
                    Some(t) if t.kind == Tok::Num => t.text.parse::<usize>().ok(),
                    _ => None,
                }
                .ok_or("only a non-negative integer literal is supported as an index")?;
                self.pos += 1;
                self.expect_sym("]")?;
                ast = aggregate(ast, Agg::Index(index));
            } else {
                return Ok(ast);
            }
        }
    }

    fn term(&mut self) -> Result<Ast, String> {
        let Some(tok) = self.peek().cloned() else {
            return Err("unexpected end of expression".into());
        };
        self.pos += 1;
        let focus = || Ast::Path {
            start: Start::Focus,
            steps: Vec::new(),
        };
        Ok(match tok.kind {
            Tok::Str => Ast::Lit(Value::String(tok.text)),
            Tok::Num => Ast::Lit(
                serde_json::from_str(&tok.text)
                    .map_err(|_| format!("bad number `{}`", tok.text))?,
            ),
            Tok::Ident if tok.text == "true" || tok.text == "false" => {
                Ast::Lit(Value::Bool(tok.text == "true"))
            }
            Tok::Ident if self.at_sym("(") => self.function(focus(), &tok.text, tok.offset)?,
            Tok::Ident | Tok::Quoted => push_step(focus(), member_step(&tok.text)),
            Tok::Var if tok.text == "this" => focus(),
            Tok::Env if matches!(tok.text.as_str(), "resource" | "rootResource" | "context") => {
                Ast::Path {
                    start: Start::Root,
                    steps: Vec::new(),
                }
            }
            Tok::Var | Tok::Env => {
                return Err(format!(
                    "variable `{}` (offset {}) is not supported",
                    tok.text, tok.offset
                ));
            }
            Tok::Sym if tok.text == "(" => {
                let inner = self.expression(0)?;
                self.expect_sym(")")?;
                Ast::Path {
                    start: Start::Sub(Box::new(inner)),
                    steps: Vec::new(),
                }
            }
            Tok::Sym => {
                return Err(format!(
                    "unexpected `{}` at offset {}",
                    tok.text, tok.offset
                ));
            }
        })
    }

    /// Parse `name(args)` applied to `input`; the `(` is next.
    fn function(&mut self, input: Ast, name: &str, offset: usize) -> Result<Ast, String> {
        self.expect_sym("(")?;
        let mut args = Vec::new();
        let mut type_arg = None;
        let takes_type = matches!(name, "as" | "ofType" | "is");
        if !self.at_sym(")") {
            loop {
                if takes_type {
                    type_arg = Some(self.type_spec()?);
                    args.push(Arg::Type);
                } else {
                    args.push(Arg::Expr(self.expression(0)?));
                }
                if self.at_sym(",") {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect_sym(")")?;
        let argc = args.len();
        let arity = |n: usize| {
            if argc == n {
                Ok(())
            } else {
                Err(format!(
                    "{name}() at offset {offset} takes {n} argument(s), got {argc}"
                ))
            }
        };
        let mut args = args.into_iter();
        let mut expr_arg = || match args.next() {
            Some(Arg::Expr(a)) => a,
            _ => unreachable!("arity checked; only type functions take types"),
        };
        Ok(match name {
            "where" | "select" => {
                arity(1)?;
                let arg = Box::new(expr_arg());
                push_step(
                    input,
                    if name == "where" {
                        Step::Where(arg)
                    } else {
                        Step::Select(arg)
                    },
                )
            }
            "as" | "ofType" | "is" => {
                arity(1)?;
                let ty = type_arg.ok_or("a type name")?;
                if name == "is" {
                    Ast::Is {
                        operand: Box::new(input),
                        ty,
                    }
                } else {
                    push_step(input, Step::OfType(ty))
                }
            }
            "extension" => {
                arity(1)?;
                push_step(input, Step::Extension(string_arg(expr_arg(), name)?.into()))
            }
            "resolve" => {
                arity(0)?;
                push_step(input, Step::Resolve)
            }
            "exists" if argc == 1 => aggregate(input, Agg::Exists(Some(Box::new(expr_arg())))),
            "exists" | "empty" | "not" | "first" | "last" | "hasValue" => {
                arity(0)?;
                aggregate(
                    input,
                    match name {
                        "exists" => Agg::Exists(None),
                        "empty" => Agg::Empty,
                        "not" => Agg::Not,
                        "first" => Agg::First,
                        "last" => Agg::Last,
                        _ => Agg::HasValue,
                    },
                )
            }
            "contains" | "startsWith" | "endsWith" => {
                arity(1)?;
                let text = string_arg(expr_arg(), name)?;
                let f = match name {
                    "contains" => StrFn::Contains,
                    "startsWith" => StrFn::StartsWith,
                    _ => StrFn::EndsWith,
                };
                aggregate(input, Agg::Str(f, text.into()))
            }
            "memberOf" => {
                return Err(format!(
                    "memberOf() at offset {offset} is not supported (needs a terminology server)"
                ));
            }
            _ => {
                return Err(format!(
                    "function {name}() at offset {offset} is not supported"
                ));
            }
        })
    }
}

enum Arg {
    Expr(Ast),
    /// A type specifier (kept aside; only `as`/`ofType`/`is` take one).
    Type,
}

fn string_arg(arg: Ast, function: &str) -> Result<String, String> {
    match arg {
        Ast::Lit(Value::String(s)) => Ok(s),
        _ => Err(format!(
            "{function}() is only supported with a string literal argument"
        )),
    }
}

fn member_step(name: &str) -> Step {
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        return Step::TypeName(name.into());
    }
    let choice = CHOICE_ELEMENTS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| CHOICE_ELEMENTS[i].1);
    Step::Child {
        name: name.into(),
        choice,
    }
}

/// Append a node-wise step, keeping paths flat.
fn push_step(ast: Ast, step: Step) -> Ast {
    match ast {
        Ast::Path { start, mut steps } => {
            steps.push(step);
            Ast::Path { start, steps }
        }
        other => Ast::Path {
            start: Start::Sub(Box::new(other)),
            steps: vec![step],
        },
    }
}

fn aggregate(input: Ast, agg: Agg) -> Ast {
    Ast::Agg {
        input: Box::new(input),
        agg,
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation: streaming, so a path allocates nothing per node.

struct Env<'a> {
    root: &'a Value,
    /// The root's `resourceType`, looked up once: unions such as `Account.subject |
    /// Patient.link | …` test it once per branch.
    root_type: Option<&'a str>,
}

fn resource_type(value: &Value) -> Option<&str> {
    value.get("resourceType").and_then(Value::as_str)
}

fn each<'a>(ast: &Ast, focus: Node<'a>, env: &Env<'a>, f: Sink<'_, 'a>) -> ControlFlow<()> {
    match ast {
        Ast::Path { start, steps } => match start {
            Start::Focus => walk(steps, focus, env, f),
            Start::Root => {
                let root = Node {
                    value: env.root,
                    type_name: None,
                };
                walk(steps, root, env, f)
            }
            Start::Sub(sub) => each(sub, focus, env, &mut |n| walk(steps, n, env, f)),
        },
        Ast::Lit(Value::Bool(b)) => f(bool_node(*b)),
        // Other literals are compared in place (see `check`).
        Ast::Lit(_) => ControlFlow::Continue(()),
        Ast::Union(branches) => {
            let mut items = Vec::new();
            union_into(branches, focus, env, &mut items);
            items.into_iter().try_for_each(f)
        }
        Ast::Equal { .. } | Ast::Member { .. } | Ast::Logic { .. } | Ast::Is { .. } => {
            match truth(ast, focus, env) {
                Some(b) => f(bool_node(b)),
                None => ControlFlow::Continue(()),
            }
        }
        Ast::Agg { input, agg } => aggregate_each(input, agg, focus, env, f),
    }
}

fn union_into<'a>(branches: &[Ast], focus: Node<'a>, env: &Env<'a>, out: &mut Vec<Node<'a>>) {
    for branch in branches {
        let _ = each(branch, focus, env, &mut |n| {
            if !out.iter().any(|o| values_equal(o.value, n.value)) {
                out.push(n);
            }
            ControlFlow::Continue(())
        });
    }
}

fn walk<'a>(steps: &[Step], node: Node<'a>, env: &Env<'a>, f: Sink<'_, 'a>) -> ControlFlow<()> {
    let Some((step, rest)) = steps.split_first() else {
        return f(node);
    };
    match step {
        Step::Child { name, choice } => {
            let Value::Object(map) = node.value else {
                return ControlFlow::Continue(());
            };
            if let Some(value) = map.get(&**name) {
                return items(value, None, &mut |n| walk(rest, n, env, f));
            }
            if let Some(allowed) = choice {
                for (key, value) in map {
                    if let Some(ty) = choice_type(key, name, *allowed) {
                        items(value, Some(ty), &mut |n| walk(rest, n, env, f))?;
                    }
                }
            }
            ControlFlow::Continue(())
        }
        Step::TypeName(name) => {
            let rtype = if std::ptr::eq(node.value, env.root) {
                env.root_type
            } else {
                resource_type(node.value)
            };
            if rtype.is_some_and(|rt| type_name_matches(rt, name)) {
                walk(rest, node, env, f)
            } else {
                ControlFlow::Continue(())
            }
        }
        Step::OfType(ty) => {
            if type_matches(node, ty) {
                walk(rest, node, env, f)
            } else {
                ControlFlow::Continue(())
            }
        }
        Step::Where(criteria) => {
            if truth(criteria, node, env) == Some(true) {
                walk(rest, node, env, f)
            } else {
                ControlFlow::Continue(())
            }
        }
        Step::Select(projection) => each(projection, node, env, &mut |n| walk(rest, n, env, f)),
        Step::Extension(url) => {
            let Some(Value::Array(extensions)) = node.value.get("extension") else {
                return ControlFlow::Continue(());
            };
            for ext in extensions {
                if ext.get("url").and_then(Value::as_str) == Some(&**url) {
                    walk(
                        rest,
                        Node {
                            value: ext,
                            type_name: Some("Extension"),
                        },
                        env,
                        f,
                    )?;
                }
            }
            ControlFlow::Continue(())
        }
        Step::Resolve => match node
            .value
            .get("reference")
            .and_then(Value::as_str)
            .and_then(reference_type)
        {
            Some(ty) => walk(
                rest,
                Node {
                    value: node.value,
                    type_name: Some(ty),
                },
                env,
                f,
            ),
            None => ControlFlow::Continue(()),
        },
    }
}

/// Call `f` on `value`, or on each item when it is an array (JSON nulls are absent values).
fn items<'a>(value: &'a Value, ty: Option<&'a str>, f: Sink<'_, 'a>) -> ControlFlow<()> {
    match value {
        Value::Array(list) => {
            for item in list.iter().filter(|v| !v.is_null()) {
                f(Node {
                    value: item,
                    type_name: ty,
                })?;
            }
            ControlFlow::Continue(())
        }
        Value::Null => ControlFlow::Continue(()),
        _ => f(Node {
            value,
            type_name: ty,
        }),
    }
}

/// The FHIR type of `key` if it is choice element `name` with an allowed type suffix.
fn choice_type(key: &str, name: &str, allowed: Option<&[&str]>) -> Option<&'static str> {
    let suffix = key.strip_prefix(name)?;
    if !suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    if let Some(allowed) = allowed {
        allowed.binary_search(&suffix).ok()?;
    }
    CHOICE_TYPES
        .binary_search_by(|(s, _)| (*s).cmp(suffix))
        .ok()
        .map(|i| CHOICE_TYPES[i].1)
}

/// The resource type named by a reference: `Type/id[/_history/v]`, relative or absolute.
fn reference_type(reference: &str) -> Option<&str> {
    let path = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    let valid_type = ty.starts_with(|c: char| c.is_ascii_uppercase())
        && ty.bytes().all(|b| b.is_ascii_alphanumeric());
    (valid_type && !id.is_empty()).then_some(ty)
}

/// Whether a resource of type `rt` is a `name` (itself, `Resource` or `DomainResource`).
fn type_name_matches(rt: &str, name: &str) -> bool {
    rt == name
        || name == "Resource"
        || (name == "DomainResource" && !matches!(rt, "Bundle" | "Binary" | "Parameters"))
}

/// FHIR types whose base type is not `Element`/`DomainResource` (from the R4 model).
fn parent_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity" => {
            "Quantity"
        }
        "code" | "id" | "markdown" => "string",
        "canonical" | "oid" | "url" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        _ => return None,
    })
}

/// FHIR primitive types that a System type name (`String`, `DateTime`, …) covers.
fn system_type_covers(system: &str, fhir: &str) -> bool {
    match system {
        "String" => matches!(
            fhir,
            "string" | "code" | "id" | "markdown" | "uri" | "url" | "canonical" | "oid" | "uuid"
        ),
        "Boolean" => fhir == "boolean",
        "Integer" => matches!(fhir, "integer" | "positiveInt" | "unsignedInt"),
        "Decimal" => fhir == "decimal",
        "Date" => fhir == "date",
        "DateTime" => matches!(fhir, "dateTime" | "instant"),
        "Time" => fhir == "time",
        "Quantity" => fhir == "Quantity" || parent_type(fhir) == Some("Quantity"),
        _ => false,
    }
}

fn type_matches(node: Node<'_>, ty: &TypeSpec) -> bool {
    let namespace = ty.namespace.as_deref();
    let Some(actual) = node.type_name.or_else(|| resource_type(node.value)) else {
        return false;
    };
    if namespace != Some("System") {
        let mut t = Some(actual);
        while let Some(name) = t {
            if name == &*ty.name {
                return true;
            }
            t = parent_type(name);
        }
        let resource = actual.starts_with(|c: char| c.is_ascii_uppercase())
            && actual != "Extension"
            && CHOICE_TYPES
                .binary_search_by(|(s, _)| (*s).cmp(actual))
                .is_err();
        if resource
            && (&*ty.name == "Resource"
                || (&*ty.name == "DomainResource"
                    && !matches!(actual, "Bundle" | "Binary" | "Parameters")))
        {
            return true;
        }
    }
    namespace != Some("FHIR") && system_type_covers(&ty.name, actual)
}

/// FHIRPath equality of two values (numbers by value, objects deeply).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => objects_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        _ => a == b,
    }
}

fn objects_equal(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
}

/// Equivalence (`~`): strings case-insensitively with whitespace normalised, else equality.
fn values_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x
            .split_whitespace()
            .map(str::to_lowercase)
            .eq(y.split_whitespace().map(str::to_lowercase)),
        _ => values_equal(a, b),
    }
}

/// At most the first item of a collection and its size (no allocation).
fn first_and_count<'a>(ast: &Ast, focus: Node<'a>, env: &Env<'a>) -> (Option<Node<'a>>, usize) {
    let mut first = None;
    let mut count = 0;
    let _ = each(ast, focus, env, &mut |n| {
        first.get_or_insert(n);
        count += 1;
        if count > 1 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    (first, count)
}

/// An operand as a list of values; literals borrow from the tree.
fn operand_values<'x>(ast: &'x Ast, focus: Node<'x>, env: &Env<'x>) -> Vec<&'x Value> {
    if let Ast::Lit(v) = ast {
        return vec![v];
    }
    let mut out = Vec::new();
    let _ = each(ast, focus, env, &mut |n| {
        out.push(n.value);
        ControlFlow::Continue(())
    });
    out
}

/// The single value of an operand, `None` if empty, `Some(None)` if several.
fn singleton<'x>(ast: &'x Ast, focus: Node<'x>, env: &Env<'x>) -> Option<Option<&'x Value>> {
    if let Ast::Lit(v) = ast {
        return Some(Some(v));
    }
    match first_and_count(ast, focus, env) {
        (None, _) => None,
        (Some(n), 1) => Some(Some(n.value)),
        _ => Some(None),
    }
}

/// Evaluate as a boolean (three-valued: `None` = empty). A single non-boolean item is true.
fn truth<'a>(ast: &Ast, focus: Node<'a>, env: &Env<'a>) -> Option<bool> {
    match ast {
        Ast::Lit(Value::Bool(b)) => Some(*b),
        Ast::Equal {
            left,
            right,
            negate,
            equivalent,
        } => {
            let eq = |a: &Value, b: &Value| {
                if *equivalent {
                    values_equivalent(a, b)
                } else {
                    values_equal(a, b)
                }
            };
            let (l, r) = (singleton(left, focus, env), singleton(right, focus, env));
            if !*equivalent && (l.is_none() || r.is_none()) {
                return None;
            }
            let equal = match (l, r) {
                (None, None) => true,
                (None, _) | (_, None) => false,
                (Some(Some(a)), Some(Some(b))) => eq(a, b),
                _ => {
                    let (l, r) = (
                        operand_values(left, focus, env),
                        operand_values(right, focus, env),
                    );
                    l.len() == r.len() && l.iter().zip(&r).all(|(a, b)| eq(a, b))
                }
            };
            Some(equal != *negate)
        }
        Ast::Member { left, right } => {
            let needle = singleton(right, focus, env)??;
            let haystack = operand_values(left, focus, env);
            Some(haystack.iter().any(|v| values_equal(v, needle)))
        }
        Ast::Logic { op, left, right } => {
            let l = truth(left, focus, env);
            // Short-circuit where the result is already decided.
            match (op, l) {
                (Logic::And, Some(false)) => return Some(false),
                (Logic::Or, Some(true)) => return Some(true),
                (Logic::Implies, Some(false)) => return Some(true),
                _ => {}
            }
            let r = truth(right, focus, env);
            match op {
                Logic::And => match (l, r) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                Logic::Or => match (l, r) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                Logic::Xor => Some(l? != r?),
                Logic::Implies => match (l, r) {
                    (_, Some(true)) => Some(true),
                    (Some(true), r) => r,
                    _ => None,
                },
            }
        }
        Ast::Is { operand, ty } => match first_and_count(operand, focus, env) {
            (Some(n), 1) => Some(type_matches(n, ty)),
            _ => None,
        },
        other => match first_and_count(other, focus, env) {
            (Some(n), 1) => Some(n.value.as_bool().unwrap_or(true)),
            _ => None,
        },
    }
}

fn aggregate_each<'a>(
    input: &Ast,
    agg: &Agg,
    focus: Node<'a>,
    env: &Env<'a>,
    f: Sink<'_, 'a>,
) -> ControlFlow<()> {
    let nth = |index: usize| {
        let mut seen = 0;
        let mut found = None;
        let _ = each(input, focus, env, &mut |n| {
            if seen == index {
                found = Some(n);
                return ControlFlow::Break(());
            }
            seen += 1;
            ControlFlow::Continue(())
        });
        found
    };
    let result = match agg {
        Agg::First => return nth(0).map_or(ControlFlow::Continue(()), f),
        Agg::Index(i) => return nth(*i).map_or(ControlFlow::Continue(()), f),
        Agg::Last => {
            let mut last = None;
            let _ = each(input, focus, env, &mut |n| {
                last = Some(n);
                ControlFlow::Continue(())
            });
            return last.map_or(ControlFlow::Continue(()), f);
        }
        Agg::Exists(criteria) => {
            let mut found = false;
            let _ = each(input, focus, env, &mut |n| {
                if criteria
                    .as_ref()
                    .is_none_or(|c| truth(c, n, env) == Some(true))
                {
                    found = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            Some(found)
        }
        Agg::Empty => Some(first_and_count(input, focus, env).0.is_none()),
        Agg::Not => truth(input, focus, env).map(|b| !b),
        Agg::HasValue => Some(match first_and_count(input, focus, env) {
            (Some(n), 1) => matches!(
                n.value,
                Value::String(_) | Value::Number(_) | Value::Bool(_)
            ),
            _ => false,
        }),
        Agg::Str(func, text) => match first_and_count(input, focus, env) {
            (Some(n), 1) => n.value.as_str().map(|s| match func {
                StrFn::Contains => s.contains(&**text),
                StrFn::StartsWith => s.starts_with(&**text),
                StrFn::EndsWith => s.ends_with(&**text),
            }),
            _ => None,
        },
    };
    match result {
        Some(b) => f(bool_node(b)),
        None => ControlFlow::Continue(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Generated from the R4 model's choice-type paths (fhirpath.js `fhir-context/r4`).

/// Every type suffix a choice element may carry, with the FHIR type it names (sorted).
const CHOICE_TYPES: &[(&str, &str)] = &[
    ("Address", "Address"),
    ("Age", "Age"),
    ("Annotation", "Annotation"),
    ("Attachment", "Attachment"),
    ("Base64Binary", "base64Binary"),
    ("Boolean", "boolean"),
    ("Canonical", "canonical"),
    ("Code", "code"),
    ("CodeableConcept", "CodeableConcept"),
    ("Coding", "Coding"),
    ("ContactDetail", "ContactDetail"),
    ("ContactPoint", "ContactPoint"),
    ("Contributor", "Contributor"),
    ("Count", "Count"),
    ("DataRequirement", "DataRequirement"),
    ("Date", "date"),
    ("DateTime", "dateTime"),
    ("Decimal", "decimal"),
    ("Distance", "Distance"),
    ("Dosage", "Dosage"),
    ("Duration", "Duration"),
    ("Expression", "Expression"),
    ("HumanName", "HumanName"),
    ("Id", "id"),
    ("Identifier", "Identifier"),
    ("Instant", "instant"),
    ("Integer", "integer"),
    ("Markdown", "markdown"),
    ("Meta", "Meta"),
    ("Money", "Money"),
    ("Oid", "oid"),
    ("ParameterDefinition", "ParameterDefinition"),
    ("Period", "Period"),
    ("PositiveInt", "positiveInt"),
    ("Quantity", "Quantity"),
    ("Range", "Range"),
    ("Ratio", "Ratio"),
    ("Reference", "Reference"),
    ("RelatedArtifact", "RelatedArtifact"),
    ("SampledData", "SampledData"),
    ("Signature", "Signature"),
    ("String", "string"),
    ("Time", "time"),
    ("Timing", "Timing"),
    ("TriggerDefinition", "TriggerDefinition"),
    ("UnsignedInt", "unsignedInt"),
    ("Uri", "uri"),
    ("Url", "url"),
    ("UsageContext", "UsageContext"),
    ("Uuid", "uuid"),
];

/// R4 choice element names (`value[x]`…) and the type suffixes each allows somewhere (sorted);
/// `None` = any of [`CHOICE_TYPES`]. From the R4 model's choice-type paths.
const CHOICE_ELEMENTS: &[(&str, Option<&[&str]>)] = &[
    (
        "abatement",
        Some(&["Age", "DateTime", "Period", "Range", "String"]),
    ),
    ("additive", Some(&["CodeableConcept", "Reference"])),
    ("age", Some(&["Age", "CodeableConcept", "Range", "String"])),
    (
        "allowed",
        Some(&[
            "Boolean",
            "CodeableConcept",
            "Money",
            "String",
            "UnsignedInt",
        ]),
    ),
    ("amount", Some(&["Quantity", "Range", "Ratio", "String"])),
    (
        "answer",
        Some(&[
            "Boolean",
            "Coding",
            "Date",
            "DateTime",
            "Decimal",
            "Integer",
            "Quantity",
            "Reference",
            "String",
            "Time",
        ]),
    ),
    ("asNeeded", Some(&["Boolean", "CodeableConcept"])),
    ("author", Some(&["Reference", "String"])),
    ("born", Some(&["Date", "Period", "String"])),
    ("bounds", Some(&["Duration", "Period", "Range"])),
    ("characteristic", Some(&["CodeableConcept", "Quantity"])),
    ("chargeItem", Some(&["CodeableConcept", "Reference"])),
    ("code", Some(&["CodeableConcept", "Reference"])),
    ("collected", Some(&["DateTime", "Period"])),
    ("content", Some(&["Attachment", "Reference", "String"])),
    ("created", Some(&["DateTime", "Period"])),
    ("date", Some(&["DateTime", "Period"])),
    (
        "deceased",
        Some(&["Age", "Boolean", "Date", "DateTime", "Range", "String"]),
    ),
    ("defaultValue", None),
    ("definingSubstance", Some(&["CodeableConcept", "Reference"])),
    (
        "definition",
        Some(&[
            "Canonical",
            "CodeableConcept",
            "DataRequirement",
            "Expression",
            "Reference",
            "TriggerDefinition",
            "Uri",
        ]),
    ),
    (
        "detail",
        Some(&[
            "Boolean",
            "CodeableConcept",
            "Integer",
            "Quantity",
            "Range",
            "Ratio",
            "String",
        ]),
    ),
    ("diagnosis", Some(&["CodeableConcept", "Reference"])),
    ("dose", Some(&["Quantity", "Range"])),
    ("doseNumber", Some(&["PositiveInt", "String"])),
    ("due", Some(&["Date", "Duration"])),
    (
        "effective",
        Some(&["DateTime", "Instant", "Period", "Timing"]),
    ),
    ("entity", Some(&["CodeableConcept", "Reference"])),
    ("event", Some(&["Coding", "Uri"])),
    ("example", Some(&["Boolean", "Canonical"])),
    ("fastingStatus", Some(&["CodeableConcept", "Duration"])),
    ("fixed", None),
    ("identified", Some(&["DateTime", "Period"])),
    ("indication", Some(&["CodeableConcept", "Reference"])),
    ("item", Some(&["CodeableConcept", "Reference"])),
    ("legallyBinding", Some(&["Attachment", "Reference"])),
    (
        "location",
        Some(&["Address", "CodeableConcept", "Reference"]),
    ),
    ("manufacturer", Some(&["Reference", "String"])),
    (
        "maxValue",
        Some(&[
            "Date",
            "DateTime",
            "Decimal",
            "Instant",
            "Integer",
            "PositiveInt",
            "Quantity",
            "Time",
            "UnsignedInt",
        ]),
    ),
    ("medication", Some(&["CodeableConcept", "Reference"])),
    (
        "minValue",
        Some(&[
            "Date",
            "DateTime",
            "Decimal",
            "Instant",
            "Integer",
            "PositiveInt",
            "Quantity",
            "Time",
            "UnsignedInt",
        ]),
    ),
    ("minimumVolume", Some(&["Quantity", "String"])),
    ("module", Some(&["Canonical", "CodeableConcept", "Uri"])),
    ("multipleBirth", Some(&["Boolean", "Integer"])),
    ("name", Some(&["Reference", "Url"])),
    ("occurred", Some(&["DateTime", "Period"])),
    (
        "occurrence",
        Some(&["DateTime", "Period", "String", "Timing"]),
    ),
    ("offset", Some(&["Duration", "Range"])),
    (
        "onset",
        Some(&["Age", "DateTime", "Period", "Range", "String"]),
    ),
    (
        "participantEffective",
        Some(&["DateTime", "Duration", "Period", "Timing"]),
    ),
    ("pattern", None),
    (
        "performed",
        Some(&["Age", "DateTime", "Period", "Range", "String"]),
    ),
    ("probability", Some(&["Decimal", "Range"])),
    ("procedure", Some(&["CodeableConcept", "Reference"])),
    ("product", Some(&["CodeableConcept", "Reference"])),
    ("quantity", Some(&["Quantity", "Range", "Ratio"])),
    ("rate", Some(&["Quantity", "Range", "Ratio"])),
    ("reported", Some(&["Boolean", "Reference"])),
    ("scheduled", Some(&["Period", "String", "Timing"])),
    ("seriesDoses", Some(&["PositiveInt", "String"])),
    ("serviced", Some(&["Date", "Period"])),
    (
        "source",
        Some(&["Attachment", "Canonical", "Reference", "Uri"]),
    ),
    ("start", Some(&["CodeableConcept", "Date"])),
    ("statusReason", Some(&["CodeableConcept", "Reference"])),
    (
        "studyEffective",
        Some(&["DateTime", "Duration", "Period", "Timing"]),
    ),
    ("subject", Some(&["CodeableConcept", "Reference"])),
    ("substance", Some(&["CodeableConcept", "Reference"])),
    (
        "target",
        Some(&["Canonical", "Identifier", "Reference", "Uri"]),
    ),
    ("time", Some(&["DateTime", "Period"])),
    (
        "timing",
        Some(&[
            "Age",
            "Date",
            "DateTime",
            "Duration",
            "Period",
            "Range",
            "Reference",
            "Timing",
        ]),
    ),
    ("topic", Some(&["CodeableConcept", "Reference"])),
    ("used", Some(&["Money", "String", "UnsignedInt"])),
    ("value", None),
    ("when", Some(&["Period", "Range"])),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expression: &str, resource: &Value) -> Vec<Value> {
        compile(expression)
            .unwrap()
            .evaluate(resource)
            .into_iter()
            .map(|n| n.value.clone())
            .collect()
    }

    fn patient() -> Value {
        json!({"resourceType": "Patient", "id": "p1", "active": true,
            "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
            "name": [{"family": "Chalmers", "given": ["Peter", "James"]}, {"given": ["Jim"]}],
            "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "a@b.c"}],
            "deceasedDateTime": "2015-02-14T13:42:00+10:00",
            "multipleBirthInteger": 2,
            "link": [{"other": {"reference": "Patient/2"}}, {"other": {"reference": "https://x.org/fhir/RelatedPerson/3/_history/1"}},
                     {"other": {"reference": "#c"}}],
            "extension": [{"url": "http://e/race", "valueCoding": {"code": "x"}},
                          {"url": "http://e/other", "valueString": "y"}]})
    }

    #[test]
    fn paths_flatten_and_filter_by_type() {
        let p = patient();
        assert_eq!(
            eval("Patient.name.given", &p),
            vec![json!("Peter"), json!("James"), json!("Jim")]
        );
        assert_eq!(
            eval("Account.identifier | Patient.name.family", &p),
            vec![json!("Chalmers")]
        );
        assert_eq!(eval("Observation.code", &p), Vec::<Value>::new());
        assert_eq!(
            eval("Resource.meta.lastUpdated", &p),
            vec![json!("2024-01-01T00:00:00Z")]
        );
        assert_eq!(eval("DomainResource.id", &p), vec![json!("p1")]);
        assert_eq!(eval("Patient.name[1].given", &p), vec![json!("Jim")]);
        assert_eq!(
            eval("Patient.name.first().given.last()", &p),
            vec![json!("James")]
        );
        assert_eq!(eval("Patient.name.given | Patient.name.given", &p).len(), 3);
    }

    #[test]
    fn choice_elements_and_types() {
        let p = patient();
        let nodes = compile("Patient.deceased").unwrap().evaluate(&p);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].type_name, Some("dateTime"));
        assert_eq!(eval("(Patient.deceased as dateTime)", &p).len(), 1);
        assert_eq!(eval("Patient.deceased.as(boolean)", &p).len(), 0);
        assert_eq!(eval("Patient.deceased.ofType(dateTime)", &p).len(), 1);
        assert_eq!(eval("Patient.deceased is dateTime", &p), vec![json!(true)]);
        assert_eq!(eval("Patient.deceased is DateTime", &p), vec![json!(true)]);
        assert_eq!(
            eval("Patient.multipleBirth is integer", &p),
            vec![json!(true)]
        );
        assert_eq!(eval("Patient is DomainResource", &p), vec![json!(true)]);
        let obs = json!({"resourceType": "Observation", "valueQuantity": {"value": 1},
            "component": [{"valueAge": {"value": 3}}, {"valueString": "s"}]});
        assert_eq!(
            eval("(Observation.component.value as Quantity)", &obs),
            vec![json!({"value": 3})]
        );
        assert_eq!(
            eval("(Observation.value as Quantity)", &obs),
            vec![json!({"value": 1})]
        );
        assert_eq!(
            eval("(Observation.component.value as string)", &obs),
            vec![json!("s")]
        );
        let roots = compile("Observation").unwrap().evaluate(&obs);
        assert_eq!(roots[0].type_name, Some("Observation"));
    }

    #[test]
    fn where_logic_and_functions() {
        let p = patient();
        assert_eq!(
            eval("Patient.telecom.where(system='email').value", &p),
            vec![json!("a@b.c")]
        );
        assert_eq!(
            eval("Patient.telecom.where(system!='email').value", &p),
            vec![json!("555")]
        );
        assert_eq!(
            eval(
                "Patient.telecom.where(system='email' or system='phone').value",
                &p
            )
            .len(),
            2
        );
        assert_eq!(
            eval("Patient.telecom.where(system='email' and value='555')", &p).len(),
            0
        );
        assert_eq!(
            eval(
                "Patient.deceased.exists() and Patient.deceased != false",
                &p
            ),
            vec![json!(true)]
        );
        assert_eq!(eval("Patient.birthDate.exists()", &p), vec![json!(false)]);
        assert_eq!(eval("Patient.birthDate.empty()", &p), vec![json!(true)]);
        assert_eq!(eval("Patient.active.not()", &p), vec![json!(false)]);
        assert_eq!(eval("Patient.active.hasValue()", &p), vec![json!(true)]);
        assert_eq!(
            eval("Patient.name.where(given.exists()).count", &p).len(),
            0
        );
        assert_eq!(
            eval("Patient.name.exists(family = 'Chalmers')", &p),
            vec![json!(true)]
        );
        assert_eq!(
            eval("Patient.name.family.contains('alm')", &p),
            vec![json!(true)]
        );
        assert_eq!(
            eval("Patient.name.given contains 'Jim'", &p),
            vec![json!(true)]
        );
        assert_eq!(eval("'Jim' in Patient.name.given", &p), vec![json!(true)]);
        assert_eq!(
            eval("Patient.extension('http://e/other').value", &p),
            vec![json!("y")]
        );
        assert_eq!(
            eval(
                "Patient.extension.where(url = 'http://e/race').value.code",
                &p
            ),
            vec![json!("x")]
        );
        assert_eq!(
            eval("Patient.name.select(given.first())", &p),
            vec![json!("Peter"), json!("Jim")]
        );
        let vs = json!({"resourceType": "ValueSet", "expansion": {"contains": [{"code": "a"}]}});
        assert_eq!(
            eval("ValueSet.expansion.contains.code", &vs),
            vec![json!("a")]
        );
    }

    #[test]
    fn resolve_is_by_reference_type() {
        let p = patient();
        assert_eq!(
            eval("Patient.link.other.where(resolve() is Patient)", &p),
            vec![json!({"reference": "Patient/2"})]
        );
        assert_eq!(
            eval(
                "Patient.link.other.where(resolve() is RelatedPerson or resolve() is Patient)",
                &p
            )
            .len(),
            2
        );
        assert_eq!(
            eval("Patient.link.other.where(resolve() is Resource)", &p).len(),
            2
        );
        assert_eq!(reference_type("urn:uuid:1"), None);
        assert_eq!(reference_type("Patient/1/_history/2"), Some("Patient"));
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        for (expression, needle) in [
            ("Patient.name.given.memberOf('http://vs')", "memberOf"),
            ("Patient.name.count()", "count"),
            ("Patient.birthDate < @2000", "unexpected character"),
            ("Patient.multipleBirth + 1", "not supported"),
            ("Patient.link.other.resolve().name", "resolve()"),
            ("'x'", "literal"),
            ("Patient.name.where(", "end"),
            ("Patient.name)", "unexpected"),
            ("%ucum", "ucum"),
        ] {
            let err = compile(expression).unwrap_err();
            assert!(err.contains(expression), "{err}");
            assert!(err.contains(needle), "{expression}: {err}");
        }
    }

    #[test]
    fn compiled_expressions_are_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Expr>();
    }

    fn core_parameters() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conformance/search-parameters.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn every_core_expression_compiles() {
        let bundle = core_parameters();
        let mut failures = Vec::new();
        let mut count = 0;
        for entry in bundle["entry"].as_array().unwrap() {
            let sp = &entry["resource"];
            let components = sp["component"].as_array().into_iter().flatten();
            let expressions = sp["expression"]
                .as_str()
                .into_iter()
                .chain(components.filter_map(|c| c["expression"].as_str()));
            for expression in expressions {
                count += 1;
                if let Err(e) = compile(expression) {
                    failures.push(format!("{}: {e}", sp["id"]));
                }
            }
        }
        assert!(count > 1400, "only {count} expressions found");
        assert!(
            failures.is_empty(),
            "do not compile:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn evaluation_is_fast_enough_for_every_write() {
        let bundle = core_parameters();
        let p = patient();
        let exprs: Vec<Expr> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .filter(|sp| {
                sp["base"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b == "Patient" || b == "Resource")
            })
            .filter_map(|sp| compile(sp["expression"].as_str()?).ok())
            .collect();
        assert!(exprs.len() > 20);
        let start = std::time::Instant::now();
        let mut nodes = 0;
        for _ in 0..100 {
            nodes += exprs.iter().map(|e| e.evaluate(&p).len()).sum::<usize>();
        }
        assert!(nodes > 0);
        // Generous bound (debug build, shared machine): 100 rounds well under a second.
        assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
    }
}

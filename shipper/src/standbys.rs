//! Replication modes and PostgreSQL `synchronous_standby_names` syntax.
//!
//! Grammar (as PostgreSQL's `syncrep_gram.y`):
//!
//! ```text
//! config := FIRST num '(' list ')'      priority: the first `num` connected standbys of the list
//!         | ANY num '(' list ')'        quorum: any `num` standbys of the list
//!         | num '(' list ')'            same as FIRST num (…)
//!         | list                        same as FIRST 1 (list)
//! list   := name (',' name)*
//! name   := identifier | number | "double-quoted" ("" inside quotes is one ")  |  *  (any standby)
//! ```
//!
//! `FIRST`/`ANY` are case-insensitive keywords; to use one as a standby name, quote it.
//! Names match follower ids ASCII-case-insensitively, as PostgreSQL matches
//! `application_name`.
//!
//! Deliberate differences from PostgreSQL, both to catch mistakes early:
//! * unquoted names may also contain `-` and `.` (node ids such as `db-1.eu` are common);
//! * a name listed twice, `num = 0`, or `num` larger than the number of listed names (without
//!   `*`) is an error rather than a configuration that can never (or needlessly) be satisfied.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, ShipperError};

/// How the leader acknowledges writes (`[replication] mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ReplicationMode {
    /// Acknowledge once the leader has the write (PostgreSQL `synchronous_standby_names = ''`).
    Async,
    /// Priority-based synchronous replication (PostgreSQL `FIRST k (…)`).
    Sync,
    /// Quorum-based synchronous replication (PostgreSQL `ANY k (…)`); the default.
    #[default]
    Quorum,
}

impl ReplicationMode {
    /// The config spelling: `async`, `sync` or `quorum`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
            ReplicationMode::Quorum => "quorum",
        }
    }
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReplicationMode {
    type Err = ShipperError;

    /// Parses `async`, `sync` or `quorum` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "async" => Ok(ReplicationMode::Async),
            "sync" => Ok(ReplicationMode::Sync),
            "quorum" => Ok(ReplicationMode::Quorum),
            _ => Err(ShipperError::UnknownMode(s.to_string())),
        }
    }
}

/// Priority (`FIRST`) or quorum (`ANY`) selection of synchronous standbys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncMethod {
    /// The first `num_sync` connected standbys in list order are synchronous.
    First,
    /// Any `num_sync` of the listed standbys suffice.
    Any,
}

impl SyncMethod {
    /// `FIRST` or `ANY`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMethod::First => "FIRST",
            SyncMethod::Any => "ANY",
        }
    }
}

/// A parsed `synchronous_standby_names` value.
///
/// Guarantees when produced by [`parse_standbys`]: `num_sync >= 1`, `names` is non-empty,
/// no name appears twice (case-insensitively), and without a `*` entry
/// `num_sync <= names.len()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyPolicy {
    /// Priority or quorum.
    pub method: SyncMethod,
    /// How many standbys must have a write (`k`).
    pub num_sync: usize,
    /// Standby names in priority order; `*` matches any standby.
    pub names: Vec<String>,
}

impl StandbyPolicy {
    /// The 0-based priority of follower `id` (index of the first matching name, `*` matching
    /// any id), or `None` if the policy does not list it (it is then an `async` standby).
    pub fn priority_of(&self, id: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n == "*" || n.eq_ignore_ascii_case(id))
    }

    /// True if the list contains the `*` wildcard.
    pub fn has_wildcard(&self) -> bool {
        self.names.iter().any(|n| n == "*")
    }
}

impl fmt::Display for StandbyPolicy {
    /// Canonical form that [`parse_standbys`] reads back to an equal policy:
    /// `FIRST 1 (n2, "n-3")`-style, quoting names that need it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (", self.method.as_str(), self.num_sync)?;
        for (i, n) in self.names.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if n == "*" || (is_plain_name(n) && keyword(n).is_none()) {
                f.write_str(n)?;
            } else {
                write!(f, "\"{}\"", n.replace('"', "\"\""))?;
            }
        }
        f.write_str(")")
    }
}

impl FromStr for StandbyPolicy {
    type Err = ShipperError;

    /// Same as [`parse_standbys`].
    fn from_str(s: &str) -> Result<Self> {
        parse_standbys(s)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '$' | '-' | '.')
}

fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if is_name_char(c) && c != '-' && c != '.' => chars.all(is_name_char),
        _ => false,
    }
}

fn keyword(s: &str) -> Option<SyncMethod> {
    if s.eq_ignore_ascii_case("first") {
        Some(SyncMethod::First)
    } else if s.eq_ignore_ascii_case("any") {
        Some(SyncMethod::Any)
    } else {
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// A name; `quoted` names are never keywords.
    Name {
        text: String,
        quoted: bool,
    },
    /// Digits only (a count, or a standby name).
    Num(String),
    LParen,
    RParen,
    Comma,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Name {
                text,
                quoted: false,
            } => format!("'{text}'"),
            Tok::Name { text, quoted: true } => format!("'\"{text}\"'"),
            Tok::Num(n) => format!("number '{n}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
        }
    }
}

fn syntax(input: &str, pos: usize, problem: impl Into<String>) -> ShipperError {
    ShipperError::StandbysSyntax {
        input: input.to_string(),
        pos,
        problem: problem.into(),
    }
}

/// Splits the input into tokens with their 1-based character positions.
fn lex(input: &str) -> Result<Vec<(Tok, usize)>> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((Tok::LParen, pos));
                i += 1;
            }
            ')' => {
                out.push((Tok::RParen, pos));
                i += 1;
            }
            ',' => {
                out.push((Tok::Comma, pos));
                i += 1;
            }
            '*' => {
                out.push((
                    Tok::Name {
                        text: "*".into(),
                        quoted: false,
                    },
                    pos,
                ));
                i += 1;
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(syntax(input, pos, "unterminated quoted name")),
                        Some('"') if chars.get(i + 1) == Some(&'"') => {
                            text.push('"');
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                if text.is_empty() {
                    return Err(syntax(input, pos, "empty quoted name \"\""));
                }
                out.push((Tok::Name { text, quoted: true }, pos));
            }
            c if is_name_char(c) => {
                let start = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if text.chars().all(|ch| ch.is_ascii_digit()) {
                    out.push((Tok::Num(text), pos));
                } else {
                    out.push((Tok::Name { text, quoted: false }, pos));
                }
            }
            other => {
                return Err(syntax(
                    input,
                    pos,
                    format!("unexpected character '{other}' (quote names with special characters: \"my-name\")"),
                ))
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    input: &'a str,
    toks: Vec<(Tok, usize)>,
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }
    fn peek_at(&self, ahead: usize) -> Option<&Tok> {
        self.toks.get(self.i + ahead).map(|(t, _)| t)
    }
    /// Position of the current token, or one past the end of the input.
    fn pos(&self) -> usize {
        self.toks
            .get(self.i)
            .map(|(_, p)| *p)
            .unwrap_or(self.input.chars().count() + 1)
    }
    fn err(&self, problem: impl Into<String>) -> ShipperError {
        syntax(self.input, self.pos(), problem)
    }
    fn found(&self) -> String {
        self.peek()
            .map(Tok::describe)
            .unwrap_or_else(|| "the end".to_string())
    }

    fn number(&mut self, after: &str) -> Result<usize> {
        match self.peek() {
            Some(Tok::Num(n)) => {
                let v = n.parse::<usize>().map_err(|_| {
                    self.err(format!("number of synchronous standbys {n} is too large"))
                })?;
                self.i += 1;
                Ok(v)
            }
            _ => Err(self.err(format!(
                "expected the number of synchronous standbys after {after}, found {}",
                self.found()
            ))),
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<()> {
        if self.peek() == Some(&tok) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected {what}, found {}", self.found())))
        }
    }

    fn list(&mut self) -> Result<Vec<(String, usize)>> {
        let mut names = Vec::new();
        loop {
            let pos = self.pos();
            match self.peek().cloned() {
                Some(Tok::Name { text, quoted }) => {
                    if !quoted {
                        if let Some(m) = keyword(&text) {
                            return Err(self.err(format!(
                                "keyword {} cannot be a standby name here; write \"{text}\" to use it as one",
                                m.as_str()
                            )));
                        }
                    }
                    names.push((text, pos));
                }
                Some(Tok::Num(n)) => names.push((n, pos)),
                _ => {
                    return Err(self.err(format!("expected a standby name, found {}", self.found())))
                }
            }
            self.i += 1;
            if self.peek() == Some(&Tok::Comma) {
                self.i += 1;
            } else {
                return Ok(names);
            }
        }
    }
}

/// Parses a PostgreSQL `synchronous_standby_names` value.
///
/// Returns a policy meeting the guarantees of [`StandbyPolicy`], or
/// [`ShipperError::StandbysSyntax`] / [`ShipperError::StandbysInvalid`] naming the problem and
/// its position. An empty (or all-blank) value is an error here; [`resolve_policy`] treats it as
/// "not set".
pub fn parse_standbys(input: &str) -> Result<StandbyPolicy> {
    let toks = lex(input)?;
    if toks.is_empty() {
        return Err(syntax(input, 1, "empty standby list"));
    }
    let mut p = Parser { input, toks, i: 0 };
    let (method, num_sync, parens) = match (p.peek().cloned(), p.peek_at(1).cloned()) {
        (
            Some(Tok::Name {
                text,
                quoted: false,
            }),
            _,
        ) if keyword(&text).is_some() => {
            let method = keyword(&text).unwrap_or(SyncMethod::First);
            p.i += 1;
            let k = p.number(method.as_str())?;
            p.expect(Tok::LParen, "'(' before the standby list")?;
            (method, k, true)
        }
        (
            Some(Tok::Name {
                text,
                quoted: false,
            }),
            Some(Tok::Num(_)),
        ) => return Err(p.err(format!("unknown method '{text}' (expected FIRST or ANY)"))),
        (Some(Tok::Num(_)), Some(Tok::LParen)) => {
            let k = p.number("the start")?;
            p.i += 1; // '('
            (SyncMethod::First, k, true)
        }
        _ => (SyncMethod::First, 1, false),
    };
    let names = p.list()?;
    if parens {
        p.expect(Tok::RParen, "',' or ')' after a standby name")?;
    }
    if p.peek().is_some() {
        let what = if parens {
            "after ')'"
        } else {
            "after a standby name (expected ',')"
        };
        return Err(p.err(format!("unexpected {} {what}", p.found())));
    }
    for (i, (n, pos)) in names.iter().enumerate() {
        if names[..i].iter().any(|(m, _)| m.eq_ignore_ascii_case(n)) {
            return Err(syntax(
                input,
                *pos,
                format!("standby '{n}' is listed twice"),
            ));
        }
    }
    let names: Vec<String> = names.into_iter().map(|(n, _)| n).collect();
    if num_sync == 0 {
        return Err(ShipperError::StandbysInvalid {
            input: input.to_string(),
            problem: "number of synchronous standbys (0) must be greater than zero".into(),
        });
    }
    let policy = StandbyPolicy {
        method,
        num_sync,
        names,
    };
    if !policy.has_wildcard() && num_sync > policy.names.len() {
        return Err(ShipperError::StandbysInvalid {
            input: input.to_string(),
            problem: format!(
                "{num_sync} synchronous standbys required but only {} listed",
                policy.names.len()
            ),
        });
    }
    Ok(policy)
}

/// Turns `[replication] mode` + `standbys` into the policy the commit gate enforces on leader
/// `leader_id`.
///
/// * `async` → `None` (a given `standbys` value is still syntax-checked, then ignored).
/// * `sync` without `standbys` → `FIRST 1 (every other member, in config order)`.
/// * `quorum` without `standbys` → `ANY k (every other member)` where `k` standbys plus the
///   leader form a majority of all members: `k = floor(n/2)` (3 nodes → 1, 4 → 2, 5 → 2).
///   A one-member cluster has its majority in the leader alone → `None` (async behaviour).
/// * An explicit `standbys` value: the leader drops itself from the list (so all nodes can
///   share one config); every other listed name must be a member; `num_sync` must not exceed
///   the number of candidate standbys (listed members other than the leader, or all other
///   members with `*`).
///
/// A blank `standbys` value counts as not set. `members` lists every node, the leader
/// included (a leader missing from it is counted anyway).
pub fn resolve_policy(
    mode: ReplicationMode,
    standbys: Option<&str>,
    leader_id: &str,
    members: &[String],
) -> Result<Option<StandbyPolicy>> {
    let standbys = standbys.filter(|s| !s.trim().is_empty());
    let others: Vec<String> = members
        .iter()
        .filter(|m| !m.eq_ignore_ascii_case(leader_id))
        .cloned()
        .collect();
    let policy = match (mode, standbys) {
        (ReplicationMode::Async, Some(s)) => {
            parse_standbys(s)?;
            return Ok(None);
        }
        (ReplicationMode::Async, None) => return Ok(None),
        (ReplicationMode::Sync, None) => StandbyPolicy {
            method: SyncMethod::First,
            num_sync: 1,
            names: others.clone(),
        },
        (ReplicationMode::Quorum, None) => {
            let n = others.len() + 1;
            let k = n / 2;
            if k == 0 {
                return Ok(None);
            }
            StandbyPolicy {
                method: SyncMethod::Any,
                num_sync: k,
                names: others.clone(),
            }
        }
        (_, Some(s)) => {
            let mut p = parse_standbys(s)?;
            p.names.retain(|n| !n.eq_ignore_ascii_case(leader_id));
            if let Some(unknown) = p
                .names
                .iter()
                .find(|n| *n != "*" && !others.iter().any(|m| m.eq_ignore_ascii_case(n)))
            {
                return Err(ShipperError::StandbysInvalid {
                    input: s.to_string(),
                    problem: format!(
                        "standby '{unknown}' is not a cluster member (members: {})",
                        members.join(", ")
                    ),
                });
            }
            // Explicit modes must agree with the syntax: `sync` wants FIRST, `quorum` ANY.
            let want = if mode == ReplicationMode::Sync {
                SyncMethod::First
            } else {
                SyncMethod::Any
            };
            if p.method != want {
                return Err(ShipperError::StandbysInvalid {
                    input: s.to_string(),
                    problem: format!(
                        "mode = \"{mode}\" needs {} syntax, the value uses {}",
                        want.as_str(),
                        p.method.as_str()
                    ),
                });
            }
            p
        }
    };
    let candidates = if policy.has_wildcard() {
        others.len()
    } else {
        policy.names.len()
    };
    if policy.num_sync > candidates {
        return Err(ShipperError::StandbysInvalid {
            input: standbys
                .map(str::to_string)
                .unwrap_or_else(|| policy.to_string()),
            problem: format!(
                "mode \"{mode}\" on leader '{leader_id}' needs {} standbys but only {candidates} \
                 candidate(s) exist (the leader never counts as its own standby)",
                policy.num_sync
            ),
        });
    }
    Ok(Some(policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StandbyPolicy {
        parse_standbys(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }
    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
    fn err(s: &str) -> String {
        parse_standbys(s).unwrap_err().to_string()
    }

    #[test]
    fn postgres_examples() {
        // From the PostgreSQL docs (synchronous_standby_names).
        let x = p("FIRST 2 (s1, s2, s3)");
        assert_eq!(x.method, SyncMethod::First);
        assert_eq!(x.num_sync, 2);
        assert_eq!(x.names, names(&["s1", "s2", "s3"]));
        let x = p("ANY 2 (s1, s2, s3)");
        assert_eq!((x.method, x.num_sync), (SyncMethod::Any, 2));
        let x = p("2 (s1, s2, s3)");
        assert_eq!((x.method, x.num_sync), (SyncMethod::First, 2));
        let x = p("s1, s2");
        assert_eq!((x.method, x.num_sync), (SyncMethod::First, 1));
        assert_eq!(x.names, names(&["s1", "s2"]));
        let x = p("*");
        assert_eq!(x.names, names(&["*"]));
        assert!(x.has_wildcard());
        let x = p("FIRST 1 (s1, *)");
        assert_eq!(x.priority_of("s1"), Some(0));
        assert_eq!(x.priority_of("zzz"), Some(1));
        let x = p("ANY 3 (*)");
        assert_eq!(x.num_sync, 3);
    }

    #[test]
    fn keywords_case_insensitive_and_whitespace() {
        assert_eq!(p("first 1(a,b)"), p("FIRST 1 (a, b)"));
        assert_eq!(p("AnY 1 (a , b)").method, SyncMethod::Any);
        assert_eq!(p("  Any\t2\n( a ,b )  ").num_sync, 2);
    }

    #[test]
    fn quoted_and_numeric_names() {
        let x = p(r#"ANY 1 ("n-1", "say ""hi""", "FIRST")"#);
        assert_eq!(x.names, names(&["n-1", "say \"hi\"", "FIRST"]));
        let x = p("1, 2");
        assert_eq!(x.names, names(&["1", "2"]));
        assert_eq!(p("2").names, names(&["2"]));
        // walship extension: '-' and '.' in unquoted names.
        assert_eq!(p("db-1.eu, n_2").names, names(&["db-1.eu", "n_2"]));
    }

    #[test]
    fn priority_matching_is_case_insensitive() {
        let x = p("FIRST 1 (Alpha, beta)");
        assert_eq!(x.priority_of("alpha"), Some(0));
        assert_eq!(x.priority_of("BETA"), Some(1));
        assert_eq!(x.priority_of("gamma"), None);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "FIRST 2 (s1, s2, s3)",
            r#"ANY 1 ("n-1", "any", "a""b", *)"#,
            "s1",
            "3 (a,b,c,d)",
        ] {
            let x = p(s);
            assert_eq!(p(&x.to_string()), x, "{s} -> {x}");
        }
        assert_eq!(p("a, b").to_string(), "FIRST 1 (a, b)");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(err("").contains("empty standby list"));
        assert!(err("   ").contains("empty"));
        assert!(
            err("FIRST (a)").contains("expected the number of synchronous standbys after FIRST")
        );
        assert!(err("ANY 1 a, b").contains("expected '(' before the standby list"));
        assert!(err("FIRST 1 (a, b").contains("expected ',' or ')'"));
        assert!(err("FIRST 1 ()").contains("expected a standby name, found ')'"));
        assert!(err("FIRST 1 (a,)").contains("expected a standby name"));
        assert!(err("a,").contains("expected a standby name, found the end"));
        assert!(err("SOME 1 (a)").contains("unknown method 'SOME'"));
        assert!(err("FIRST 1 (a) b").contains("unexpected 'b' after ')'"));
        assert!(err("a b").contains("after a standby name (expected ',')"));
        assert!(err("FIRST 1 (a, \"b)").contains("unterminated quoted name"));
        assert!(err("FIRST 1 (\"\")").contains("empty quoted name"));
        assert!(err("FIRST 1 (a; b)").contains("unexpected character ';'"));
        assert!(err("FIRST 0 (a)").contains("must be greater than zero"));
        assert!(err("ANY 3 (a, b)").contains("3 synchronous standbys required but only 2 listed"));
        assert!(err("FIRST 1 (a, A)").contains("standby 'A' is listed twice"));
        assert!(err("FIRST 1 (first)").contains("write \"first\""));
        assert!(err("FIRST 99999999999999999999999 (a)").contains("too large"));
        assert!(err("n-1, any").contains("keyword ANY"));
        // positions are 1-based characters
        match parse_standbys("FIRST 1 (a; b)") {
            Err(ShipperError::StandbysSyntax { pos, .. }) => assert_eq!(pos, 11),
            other => panic!("{other:?}"),
        }
        match parse_standbys("FIRST 1 (a, b") {
            Err(ShipperError::StandbysSyntax { pos, .. }) => assert_eq!(pos, 14),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mode_from_str() {
        for m in [
            ReplicationMode::Async,
            ReplicationMode::Sync,
            ReplicationMode::Quorum,
        ] {
            assert_eq!(m.as_str().parse::<ReplicationMode>(), Ok(m));
        }
        assert_eq!("QUORUM".parse(), Ok(ReplicationMode::Quorum));
        assert!("semi"
            .parse::<ReplicationMode>()
            .unwrap_err()
            .to_string()
            .contains("\"semi\""));
    }

    fn members(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn resolve_defaults() {
        let m3 = members(3);
        assert_eq!(
            resolve_policy(ReplicationMode::Async, None, "n1", &m3),
            Ok(None)
        );
        let s = resolve_policy(ReplicationMode::Sync, None, "n2", &m3)
            .unwrap()
            .unwrap();
        assert_eq!(s.to_string(), "FIRST 1 (n1, n3)");
        let q = resolve_policy(ReplicationMode::Quorum, None, "n1", &m3)
            .unwrap()
            .unwrap();
        assert_eq!(q.to_string(), "ANY 1 (n2, n3)");
        let q5 = resolve_policy(ReplicationMode::Quorum, None, "n3", &members(5))
            .unwrap()
            .unwrap();
        assert_eq!(q5.to_string(), "ANY 2 (n1, n2, n4, n5)");
        let q4 = resolve_policy(ReplicationMode::Quorum, None, "n1", &members(4))
            .unwrap()
            .unwrap();
        assert_eq!(q4.num_sync, 2); // 2 standbys + leader = 3 of 4
        assert_eq!(
            resolve_policy(ReplicationMode::Quorum, None, "n1", &members(1)),
            Ok(None)
        );
        assert_eq!(
            resolve_policy(ReplicationMode::Quorum, Some("  "), "n1", &m3)
                .unwrap()
                .unwrap()
                .num_sync,
            1
        );
        let e = resolve_policy(ReplicationMode::Sync, None, "n1", &members(1)).unwrap_err();
        assert!(e.to_string().contains("needs 1 standbys but only 0"), "{e}");
    }

    #[test]
    fn resolve_explicit() {
        let m3 = members(3);
        // The leader skips itself, so every node can share one config.
        let x = resolve_policy(
            ReplicationMode::Quorum,
            Some("ANY 1 (n1, n2, n3)"),
            "n2",
            &m3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(x.names, names(&["n1", "n3"]));
        let x = resolve_policy(ReplicationMode::Sync, Some("FIRST 1 (N1, n2)"), "n1", &m3)
            .unwrap()
            .unwrap();
        assert_eq!(x.names, names(&["n2"]));
        let x = resolve_policy(ReplicationMode::Quorum, Some("ANY 2 (*)"), "n1", &m3)
            .unwrap()
            .unwrap();
        assert_eq!(x.num_sync, 2);
        let e = resolve_policy(ReplicationMode::Quorum, Some("ANY 3 (*)"), "n1", &m3).unwrap_err();
        assert!(e.to_string().contains("needs 3 standbys but only 2"), "{e}");
        let e =
            resolve_policy(ReplicationMode::Sync, Some("FIRST 2 (n1, n2)"), "n1", &m3).unwrap_err();
        assert!(e.to_string().contains("needs 2 standbys but only 1"), "{e}");
        let e =
            resolve_policy(ReplicationMode::Sync, Some("FIRST 1 (n2, n9)"), "n1", &m3).unwrap_err();
        assert!(
            e.to_string().contains("'n9' is not a cluster member"),
            "{e}"
        );
        let e = resolve_policy(ReplicationMode::Sync, Some("ANY 1 (n2)"), "n1", &m3).unwrap_err();
        assert!(e.to_string().contains("needs FIRST syntax"), "{e}");
        let e = resolve_policy(ReplicationMode::Quorum, Some("n2, n3"), "n1", &m3).unwrap_err();
        assert!(e.to_string().contains("needs ANY syntax"), "{e}");
        // async still checks the syntax
        assert!(resolve_policy(ReplicationMode::Async, Some("FIRST (x"), "n1", &m3).is_err());
        assert_eq!(
            resolve_policy(ReplicationMode::Async, Some("ANY 1 (n2)"), "n1", &m3),
            Ok(None)
        );
    }
}

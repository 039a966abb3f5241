//! A guard against SQL nested too deeply to plan.
//!
//! DataFusion plans an expression by recursion over its tree, and `a OR b OR c …` is a tree as
//! deep as it has terms. Its `recursive_protection` feature (on in TADS) grows the stack on
//! demand in its planner, but not everywhere such a tree is walked or dropped, and planning time
//! grows with the square of the depth. So TADS refuses a statement deeper than [`MAX_SQL_DEPTH`]
//! before DataFusion sees it (one line, exit 2), and runs commands on big stacks for the rest.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The deepest expression tree TADS hands to DataFusion: far above any query a person writes
/// (a `WHERE` of 1,000 `OR`s is about 1,000 deep), and where planning still takes seconds: its
/// cost grows with the square of the depth (`SELECT 1+1+…` of 2,000 terms plans in 3 s, of
/// 10,000 in 95 s and 0.9 GB, in a debug build).
pub const MAX_SQL_DEPTH: usize = 2_000;

/// An estimate of the depth of the expression trees of `sql`. A chain of operators (it ends at a
/// comma or a parenthesis) is as deep as its most frequent operator class (`OR`, `AND`,
/// comparisons, `+ -`, `* / %`, …) has operators, plus one per other class in it: `x = 1 OR
/// x = 2 OR …` with n `OR`s is n + 2 deep, `1 + 1 + …` with n terms n. Each parenthesis adds a
/// level around what it holds. Text the tokenizer rejects gets 0: DataFusion reports it.
pub fn sql_depth(sql: &str) -> usize {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return 0;
    };
    // Per open parenthesis: the operators per class in the current chain at that level, and
    // the depth of the enclosing levels.
    let mut levels: Vec<([usize; CLASSES], usize)> = vec![([0; CLASSES], 0)];
    let mut deepest = 0;
    for token in &tokens {
        let open = levels.len();
        let Some((chain, outer)) = levels.last_mut() else {
            break;
        };
        match token {
            Token::LParen => {
                let inner = *outer + chain_depth(chain) + 1;
                deepest = deepest.max(inner);
                levels.push(([0; CLASSES], inner));
            }
            Token::RParen if open > 1 => {
                levels.pop();
            }
            Token::Comma | Token::SemiColon => *chain = [0; CLASSES],
            t => {
                if let Some(class) = class_of(t) {
                    chain[class] += 1;
                    deepest = deepest.max(*outer + chain_depth(chain));
                }
            }
        }
    }
    deepest
}

/// Operator classes told apart by [`class_of`].
const CLASSES: usize = 8;

/// The depth of one chain: its most frequent class's count, plus one per other class in it.
fn chain_depth(chain: &[usize; CLASSES]) -> usize {
    let most = chain.iter().copied().max().unwrap_or(0);
    let others = chain.iter().filter(|c| **c > 0).count().saturating_sub(1);
    most + others
}

/// The precedence class of a token that joins two expressions (and so deepens the tree).
fn class_of(token: &Token) -> Option<usize> {
    let class = match token {
        Token::Word(w) => match w.keyword {
            Keyword::OR => 0,
            Keyword::AND => 1,
            Keyword::NOT => 2,
            Keyword::LIKE | Keyword::IS => 3,
            _ => return None,
        },
        Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship => 3,
        Token::Plus | Token::Minus => 4,
        Token::Mul | Token::Div | Token::Mod => 5,
        Token::StringConcat
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret
        | Token::ShiftLeft
        | Token::ShiftRight => 6,
        Token::DoubleColon | Token::Arrow | Token::LongArrow => 7,
        _ => return None,
    };
    Some(class)
}

/// `Err` with a one-line message when `sql` is nested deeper than [`MAX_SQL_DEPTH`]; `what`
/// names where it came from (`--where`, `-c`).
pub fn check_sql_depth(what: &str, sql: &str) -> Result<(), String> {
    let depth = sql_depth(sql);
    if depth > MAX_SQL_DEPTH {
        return Err(format!(
            "{what}: the SQL is nested about {depth} levels deep (a chain of operators or \
             parentheses), more than the {MAX_SQL_DEPTH} TADS plans; use IN (…) for long lists \
             of alternatives, or split it up"
        ));
    }
    Ok(())
}

/// The deepest nesting of `[`/`{`/`(` in `text` outside strings and comments (for TOML and
/// JSON values, whose parsers recurse). Strings are TOML's (JSON's are among them): `"…"` with
/// `\` escapes, `'…'`, and the multi-line `"""…"""` and `'''…'''`, which may hold lone quotes; a
/// one-line string ends with its line at the latest. A `#` outside a string comments out the
/// rest of its line.
pub fn bracket_depth(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                let multi = b[i..].starts_with(&[q; 3]);
                i += if multi { 3 } else { 1 };
                while i < b.len() {
                    let c = b[i];
                    if !multi && c == b'\n' {
                        break;
                    } else if c == b'\\' && q == b'"' {
                        // The escaped character, unless it ends a one-line string's line.
                        i += if !multi && b.get(i + 1) == Some(&b'\n') {
                            1
                        } else {
                            2
                        };
                    } else if multi && b[i..].starts_with(&[q; 3]) {
                        // Up to two more quotes belong to the string (`"""a""""` is `a"`).
                        i += 3;
                        i += b[i..].iter().take(2).take_while(|&&x| x == q).count();
                        break;
                    } else {
                        i += 1;
                        if !multi && c == q {
                            break;
                        }
                    }
                }
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_and_parentheses_count_commas_do_not() {
        assert_eq!(sql_depth("SELECT 1"), 0);
        assert_eq!(sql_depth("SELECT 1 + 2 + 3"), 2);
        assert_eq!(sql_depth("SELECT a + b, c + d, e + f FROM t"), 1);
        assert_eq!(sql_depth("SELECT ((1))"), 2);
        assert_eq!(sql_depth("SELECT (1 + (2 * 3))"), 4);
        let ors = vec!["x = 1"; 1000].join(" OR ");
        assert_eq!(sql_depth(&format!("SELECT a FROM t WHERE {ors}")), 1001);
        let ors = vec!["x = 1"; 8000].join(" OR ");
        assert!(check_sql_depth("--where", &ors).is_err());
        let wide = vec!["a + b"; 5000].join(", ");
        assert!(sql_depth(&format!("SELECT {wide} FROM t")) < 5);
        let terms = vec!["1"; 10_000].join("+");
        assert!(check_sql_depth("-c", &format!("SELECT {terms}")).is_err());
        assert!(check_sql_depth("-c", "SELECT 1 + 1").is_ok());
        assert_eq!(sql_depth("SELECT 'unterminated"), 0);
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        assert_eq!(bracket_depth("[[1], {a = 2}]"), 2);
        assert_eq!(bracket_depth(r#""[[[[" "#), 0);
        assert_eq!(bracket_depth(&"[".repeat(500)), 500);
    }

    #[test]
    fn toml_multi_line_strings_and_comments_do_not_count() {
        // Found by fuzzing (fuzz/corpus/settings/regression-multi-line-string): a `"` inside a
        // multi-line string ended the string here, and the brackets after it counted.
        let deep = "{".repeat(40);
        assert_eq!(
            bracket_depth(&format!("k = \"\"\"\nx\"{deep}\n\"\"\"\n")),
            0
        );
        assert_eq!(bracket_depth(&format!("k = '''it's {deep}'''")), 0);
        assert_eq!(bracket_depth(&format!("a = 1 # {deep}\nb = [[1]]")), 2);
        // `"""a""""` is the string `a"`; what follows it counts.
        assert_eq!(bracket_depth(r#"k = """a"""" [[1]]"#), 2);
        // A one-line string ends with its line, escaped or not.
        assert_eq!(bracket_depth("k = \"open\n[[[1]]]"), 3);
        assert_eq!(bracket_depth("k = \"open\\\n[[[1]]]"), 3);
        assert_eq!(bracket_depth(r#"k = "a\"[[" [1]"#), 1);
    }
}

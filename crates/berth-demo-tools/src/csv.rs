//! CSV reading (RFC 4180): a header row, comma-separated fields, fields in
//! double quotes may hold commas, line breaks and `""` for a quote.

/// A parsed CSV file: the header and the data rows, each as long as the
/// header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Data rows; short rows are padded with empty fields.
    pub rows: Vec<Vec<String>>,
}

/// Parses CSV text. A leading byte-order mark and a final line break are
/// ignored; lines may end in `\n` or `\r\n`; blank lines are skipped.
///
/// # Errors
///
/// No header row, an unterminated quoted field, a quote inside an unquoted
/// field or after a closing quote, or a row with more fields than the
/// header (naming its line).
pub fn parse(text: &str) -> Result<Table, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    let mut record_line = 1usize;
    // Whether the current field was quoted, and whether any byte of the
    // current record has been seen (to skip blank lines).
    let (mut quoted, mut started) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '"' if field.is_empty() && !quoted => {
                quoted = true;
                started = true;
                loop {
                    match chars.next() {
                        None => return Err(format!("line {record_line}: unterminated quoted field")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                if !matches!(chars.peek(), None | Some(',' | '\n' | '\r')) {
                    return Err(format!("line {line}: characters after a closing quote"));
                }
            }
            '"' => return Err(format!("line {line}: quote inside an unquoted field")),
            ',' => {
                record.push(std::mem::take(&mut field));
                quoted = false;
                started = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if started || !field.is_empty() {
                    record.push(std::mem::take(&mut field));
                    records.push((record_line, std::mem::take(&mut record)));
                }
                quoted = false;
                started = false;
                line += 1;
                record_line = line;
            }
            c => {
                if quoted {
                    return Err(format!("line {line}: characters after a closing quote"));
                }
                field.push(c);
                started = true;
            }
        }
    }
    if started || !field.is_empty() {
        record.push(field);
        records.push((record_line, record));
    }
    let mut records = records.into_iter();
    let (_, header) = records.next().ok_or("no header row")?;
    let mut rows = Vec::new();
    for (line, mut row) in records {
        if row.len() > header.len() {
            return Err(format!("line {line}: {} fields, but the header has {}", row.len(), header.len()));
        }
        row.resize(header.len(), String::new());
        rows.push(row);
    }
    Ok(Table { header, rows })
}

impl Table {
    /// Indices of the numeric columns: every non-empty field parses as a
    /// finite number, and at least one field is not empty.
    pub fn numeric_columns(&self) -> Vec<usize> {
        (0..self.header.len())
            .filter(|&c| {
                let mut any = false;
                let all = self.rows.iter().all(|row| {
                    let f = row[c].trim();
                    f.is_empty() || {
                        any = true;
                        number(f).is_some()
                    }
                });
                all && any
            })
            .collect()
    }
}

/// The finite number in `field`, if it holds one.
pub fn number(field: &str) -> Option<f64> {
    field.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_quoted_fields() {
        let text = "\u{feff}gene,\"note, with comma\",value\r\nBRCA1,\"say \"\"hi\"\"\",1.5\r\n\r\n\"multi\nline\",,-2\nshort\n";
        let table = parse(text).expect("csv");
        assert_eq!(table.header, strings(&["gene", "note, with comma", "value"]));
        assert_eq!(
            table.rows,
            vec![
                strings(&["BRCA1", "say \"hi\"", "1.5"]),
                strings(&["multi\nline", "", "-2"]),
                strings(&["short", "", ""]),
            ]
        );
        assert_eq!(parse("a,b").expect("csv").rows.len(), 0);
        assert_eq!(parse("a,\"\"\n1,\"\"").expect("csv").rows, vec![strings(&["1", ""])]);
    }

    #[test]
    fn rejects_malformed_csv() {
        assert!(parse("").is_err());
        assert!(parse("\n\n").is_err());
        assert!(parse("a,b\n\"open,1\n").expect_err("unterminated").contains("line 2"));
        assert!(parse("a,b\nx\"y,1\n").is_err());
        assert!(parse("a,b\n\"x\"y,1\n").is_err());
        assert!(parse("a,b\n1,2,3\n").expect_err("too long").contains("line 2: 3 fields"));
    }

    #[test]
    fn finds_numeric_columns() {
        let table = parse("id,x,label,y,empty\na,1,p,1e3,\nb,,q,-0.5,\nc,2.5,3,NaN,\n").expect("csv");
        // "y" holds NaN: not a finite number, so not numeric; "empty" has no values.
        assert_eq!(table.numeric_columns(), vec![1]);
        assert_eq!(number(" 4 "), Some(4.0));
        assert_eq!(number("inf"), None);
    }
}

//! An SVG heatmap of a table's numeric columns: one row of cells per data
//! row, one column per numeric column, each cell coloured on a scale from
//! its column's minimum to its maximum, with the value in a `<title>`
//! (shown on hover). Plain SVG: no script, no external resources.

use std::fmt::Write as _;

use berth_tool_http::text::html_escape;

use crate::csv::{Table, number};

/// A colour scale from 0 (minimum) to 1 (maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// Perceptually uniform dark blue → green → yellow (matplotlib's viridis).
    Viridis,
    /// White → black.
    Greys,
    /// White → dark blue.
    Blues,
}

/// Colour stops of viridis, evenly spaced.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2d, 0x7b),
    (0x3b, 0x52, 0x8b),
    (0x2c, 0x72, 0x8e),
    (0x21, 0x91, 0x8c),
    (0x28, 0xae, 0x80),
    (0x5e, 0xc9, 0x62),
    (0xad, 0xdc, 0x30),
    (0xfd, 0xe7, 0x25),
];

/// Colour stops of greys.
const GREYS: [(u8, u8, u8); 2] = [(0xff, 0xff, 0xff), (0x00, 0x00, 0x00)];

/// Colour stops of blues.
const BLUES: [(u8, u8, u8); 3] = [(0xf7, 0xfb, 0xff), (0x6b, 0xae, 0xd6), (0x08, 0x30, 0x6b)];

/// Fill of cells without a value.
pub const MISSING_FILL: &str = "#dddddd";

impl Palette {
    /// The palette named `name` (`viridis`, `greys`/`grays`, `blues`;
    /// case-insensitive), `None` for any other name.
    pub fn from_name(name: &str) -> Option<Palette> {
        match name.trim().to_ascii_lowercase().as_str() {
            "viridis" => Some(Palette::Viridis),
            "greys" | "grays" => Some(Palette::Greys),
            "blues" => Some(Palette::Blues),
            _ => None,
        }
    }

    /// The colour at `t` (clamped to 0..=1) as `#rrggbb`, interpolated
    /// linearly between the palette's stops.
    pub fn color(self, t: f64) -> String {
        let stops: &[(u8, u8, u8)] = match self {
            Palette::Viridis => &VIRIDIS,
            Palette::Greys => &GREYS,
            Palette::Blues => &BLUES,
        };
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let pos = t * (stops.len() - 1) as f64;
        let i = (pos.floor() as usize).min(stops.len() - 2);
        let f = pos - i as f64;
        let (a, b) = (stops[i], stops[i + 1]);
        let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as u8;
        format!("#{:02x}{:02x}{:02x}", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

/// Width of a cell, in pixels.
const CELL_W: usize = 56;
/// Height of a cell, in pixels.
const CELL_H: usize = 20;
/// Width of the row-label margin.
const LABEL_W: usize = 140;
/// Height of the column-label margin.
const HEADER_H: usize = 90;

/// The heatmap of `table`'s numeric columns as an `<svg>` element, or
/// `None` when it has no numeric column or no row. Rows are labelled with
/// the first non-numeric column (else their number).
pub fn svg(table: &Table, palette: Palette) -> Option<String> {
    let columns = table.numeric_columns();
    if columns.is_empty() || table.rows.is_empty() {
        return None;
    }
    let label_column = (0..table.header.len()).find(|c| !columns.contains(c));
    let ranges: Vec<(f64, f64)> = columns
        .iter()
        .map(|&c| {
            table
                .rows
                .iter()
                .filter_map(|r| number(&r[c]))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
        })
        .collect();
    let width = LABEL_W + CELL_W * columns.len() + 10;
    let height = HEADER_H + CELL_H * table.rows.len() + 10;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    for (j, &c) in columns.iter().enumerate() {
        let x = LABEL_W + CELL_W * j + CELL_W / 2;
        let y = HEADER_H - 6;
        let (lo, hi) = ranges[j];
        let _ = write!(
            out,
            "<text class=\"col\" x=\"{x}\" y=\"{y}\" transform=\"rotate(-45 {x} {y})\">{}<title>{} (min {lo}, max {hi})</title></text>",
            html_escape(&table.header[c]),
            html_escape(&table.header[c]),
        );
    }
    for (i, row) in table.rows.iter().enumerate() {
        let y = HEADER_H + CELL_H * i;
        let label = label_column.map_or_else(|| format!("row {}", i + 1), |c| row[c].clone());
        let _ = write!(
            out,
            "<text class=\"row\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LABEL_W - 6,
            y + CELL_H * 3 / 4,
            html_escape(&label)
        );
        for (j, &c) in columns.iter().enumerate() {
            let x = LABEL_W + CELL_W * j;
            let (fill, title) = match number(&row[c]) {
                Some(v) => {
                    let (lo, hi) = ranges[j];
                    // A constant column sits in the middle of the scale.
                    let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                    (palette.color(t), format!("{label} / {}: {}", table.header[c], row[c].trim()))
                }
                None => (MISSING_FILL.to_owned(), format!("{label} / {}: missing", table.header[c])),
            };
            let _ = write!(
                out,
                "<rect class=\"cell\" x=\"{x}\" y=\"{y}\" width=\"{CELL_W}\" height=\"{CELL_H}\" fill=\"{fill}\" \
                 stroke=\"#ffffff\"><title>{}</title></rect>",
                html_escape(&title)
            );
        }
    }
    out.push_str("</svg>");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::parse;

    #[test]
    fn one_cell_per_row_and_numeric_column() {
        let table = parse("gene,kind,s1,s2\nA,x,1,10\nB,y,2,20\nC,z,3,\n").expect("csv");
        let svg = svg(&table, Palette::Viridis).expect("svg");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect class=\"cell\"").count(), 6);
        // The non-numeric "kind" column is not drawn; "gene" labels the rows.
        assert!(!svg.contains(">kind<"));
        assert!(svg.contains("text-anchor=\"end\">B</text>"));
        assert!(svg.contains(&format!("fill=\"{MISSING_FILL}\"")));
        assert!(svg.contains("<title>C / s2: missing</title>"));
    }

    #[test]
    fn colour_scale_spans_each_column() {
        let table = parse("g,a,b\nlow,1,-100\nmid,2,0\nhigh,5,100\n").expect("csv");
        let svg = svg(&table, Palette::Greys).expect("svg");
        let fill = |title: &str| {
            let at = svg.find(&format!("<title>{title}</title>")).expect(title);
            let start = svg[..at].rfind("fill=\"").expect("fill") + 6;
            svg[start..start + 7].to_owned()
        };
        // Each column's minimum is the scale's start, its maximum its end.
        assert_eq!(fill("low / a: 1"), "#ffffff");
        assert_eq!(fill("high / a: 5"), "#000000");
        assert_eq!(fill("low / b: -100"), "#ffffff");
        assert_eq!(fill("high / b: 100"), "#000000");
        assert_eq!(fill("mid / b: 0"), Palette::Greys.color(0.5));
        assert_eq!(Palette::Viridis.color(0.0), "#440154");
        assert_eq!(Palette::Viridis.color(1.0), "#fde725");
        assert_eq!(Palette::Viridis.color(7.0), "#fde725");
        assert_eq!(Palette::Blues.color(f64::NAN), "#f7fbff");
    }

    #[test]
    fn escapes_text() {
        let table = parse("\"<gene>\",\"a&b\"\n\"<script>x</script>\",1\n\"\"\"q\"\"\",2\n").expect("csv");
        let svg = svg(&table, Palette::Viridis).expect("svg");
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("<gene>"));
        assert!(svg.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(svg.contains(">a&amp;b<title>"));
        assert!(svg.contains("&quot;q&quot; / a&amp;b: 2"));
    }

    #[test]
    fn nothing_to_draw() {
        assert_eq!(svg(&parse("a,b\nx,y\n").expect("csv"), Palette::Viridis), None);
        assert_eq!(svg(&parse("a,b\n").expect("csv"), Palette::Viridis), None);
        let constant = parse("a\n3\n3\n").expect("csv");
        assert!(svg(&constant, Palette::Greys).expect("svg").contains(&Palette::Greys.color(0.5)));
        assert_eq!(Palette::from_name(" Viridis"), Some(Palette::Viridis));
        assert_eq!(Palette::from_name("grays"), Some(Palette::Greys));
        assert_eq!(Palette::from_name("rainbow"), None);
    }
}

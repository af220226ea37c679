//! `--qr`: the first network URL as a QR code a phone can scan from the
//! terminal, drawn with Unicode half blocks (two modules per character row).

use qrcodegen::{QrCode, QrCodeEcc};

/// The QR code of `text` as terminal lines, dark modules drawn dark on a
/// light background with the quiet zone the standard asks for. None when the
/// text does not fit in a QR code.
pub fn render(text: &str) -> Option<String> {
    let code = QrCode::encode_text(text, QrCodeEcc::Low).ok()?;
    let quiet = 2;
    let size = code.size();
    let dark = |x: i32, y: i32| x >= 0 && y >= 0 && x < size && y < size && code.get_module(x, y);
    let mut out = String::new();
    let mut y = -quiet;
    while y < size + quiet {
        for x in -quiet..size + quiet {
            // Light terminal cells are the paper; each cell shows two rows.
            out.push(match (dark(x, y), dark(x, y + 1)) {
                (false, false) => '█',
                (false, true) => '▀',
                (true, false) => '▄',
                (true, true) => ' ',
            });
        }
        out.push('\n');
        y += 2;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_renders_as_a_square_of_half_blocks() {
        let text = render("http://192.168.1.20:8080/").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[0].chars().count();
        // Version 2 (25 modules) plus a quiet zone of 2 on each side.
        assert_eq!(width, 29);
        assert_eq!(lines.len(), 15);
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(
            lines[0].chars().all(|c| c == '█'),
            "the quiet zone is light"
        );
    }
}

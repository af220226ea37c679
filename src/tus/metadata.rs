//! The `Upload-Metadata` header of tus creation: comma-separated
//! `key base64value` pairs, and the client's file name among them.

use super::Tus;
use crate::base64;
use crate::error::Error;

impl Tus {
    /// Parses `Upload-Metadata`: comma-separated `key base64value` pairs, the
    /// value optional. An empty header is no pairs. Malformed (empty entry,
    /// bad base64, a repeated key, extra words) is [`Error::BadRequest`].
    pub fn parse_metadata(header: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        if header.trim().is_empty() {
            return Ok(pairs);
        }
        for pair in header.split(',') {
            let mut words = pair.split_ascii_whitespace();
            let Some(key) = words.next() else {
                return Err(Error::BadRequest(
                    "Upload-Metadata has an empty entry between commas.".into(),
                ));
            };
            let value = match words.next() {
                None => Vec::new(),
                Some(encoded) => base64::decode(encoded).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "The Upload-Metadata value of {key:?} is not valid base64."
                    ))
                })?,
            };
            if words.next().is_some() {
                return Err(Error::BadRequest(format!(
                    "The Upload-Metadata entry {key:?} has more than a key and a value."
                )));
            }
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(Error::BadRequest(format!(
                    "Upload-Metadata names {key:?} more than once."
                )));
            }
            pairs.push((key.to_owned(), value));
        }
        Ok(pairs)
    }

    /// The file name in the metadata: `relativePath` if present and non-empty
    /// (folder uploads from Uppy and the page), else `filename` (tus-js-client,
    /// tuspy), else `name`. Keys match in any case. Uppy sends the text `null`
    /// as `relativePath` for a file picked outside a folder; that counts as
    /// absent. A chosen value that is not UTF-8 is [`Error::BadRequest`].
    pub fn name_from_metadata(meta: &[(String, Vec<u8>)]) -> Result<Option<String>, Error> {
        for key in ["relativePath", "filename", "name"] {
            let Some((_, value)) = meta.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) else {
                continue;
            };
            let text = std::str::from_utf8(value).map_err(|_| {
                Error::BadRequest(format!("The file name in metadata {key:?} is not UTF-8."))
            })?;
            if text.is_empty() || (key == "relativePath" && text == "null") {
                continue;
            }
            return Ok(Some(text.to_owned()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64_pairs(header: &str) -> Vec<(String, Vec<u8>)> {
        Tus::parse_metadata(header).unwrap()
    }

    // ---- metadata ----

    #[test]
    fn metadata_parses_pairs_and_keys_without_values() {
        let pairs = b64_pairs("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential");
        assert_eq!(
            pairs,
            vec![
                ("filename".to_owned(), b"world_domination_plan.pdf".to_vec()),
                ("is_confidential".to_owned(), Vec::new()),
            ]
        );
    }

    #[test]
    fn metadata_from_tuspy_with_lower_case_keys_and_spaces_after_commas() {
        let pairs = b64_pairs("filename YS50eHQ=, filetype dGV4dC9wbGFpbg==");
        assert_eq!(pairs[0], ("filename".to_owned(), b"a.txt".to_vec()));
        assert_eq!(pairs[1], ("filetype".to_owned(), b"text/plain".to_vec()));
    }

    #[test]
    fn metadata_empty_header_is_no_pairs() {
        assert!(b64_pairs("").is_empty());
        assert!(b64_pairs("   ").is_empty());
    }

    #[test]
    fn metadata_malformed_is_bad_request() {
        for header in [
            "filename not*base64",
            "filename YQ==,,filetype dGV4dA==",
            "filename YQ== extra",
            "filename YQ==,filename Yg==",
            ",",
            "filename Y",
        ] {
            let e = Tus::parse_metadata(header).unwrap_err();
            assert!(matches!(e, Error::BadRequest(_)), "{header:?}: {e:?}");
        }
    }

    #[test]
    fn name_prefers_relative_path_then_filename_then_name() {
        let name = |header: &str| Tus::name_from_metadata(&b64_pairs(header)).unwrap();
        // relativePath "dir/a.txt", filename "a.txt", name "b.txt"
        assert_eq!(
            name("name Yi50eHQ=,filename YS50eHQ=,relativePath ZGlyL2EudHh0").as_deref(),
            Some("dir/a.txt")
        );
        assert_eq!(
            name("name Yi50eHQ=,filename YS50eHQ=").as_deref(),
            Some("a.txt")
        );
        assert_eq!(name("name Yi50eHQ=").as_deref(), Some("b.txt"));
        assert_eq!(name("filetype dGV4dA==").as_deref(), None);
        assert_eq!(name("").as_deref(), None);
        // Empty values and Uppy's "null" relativePath fall through.
        assert_eq!(
            name("relativePath,filename YS50eHQ=").as_deref(),
            Some("a.txt")
        );
        assert_eq!(
            name("relativePath bnVsbA==,filename YS50eHQ=").as_deref(),
            Some("a.txt")
        );
        // Keys match in any case.
        assert_eq!(
            name("relativepath ZGlyL2EudHh0,FILENAME YS50eHQ=").as_deref(),
            Some("dir/a.txt")
        );
    }

    #[test]
    fn name_that_is_not_utf8_is_bad_request() {
        let meta = vec![("filename".to_owned(), vec![0xff, 0xfe])];
        assert!(matches!(
            Tus::name_from_metadata(&meta),
            Err(Error::BadRequest(_))
        ));
    }
}

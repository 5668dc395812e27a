//! Fleet tokens kept in files (`--fleet-token-file` on the router and on
//! nodes), read the same way on both sides.

/// The fleet token from a file: its first line, trimmed. An empty file is an
/// error, not "no token": a router that silently ran without one would admit
/// anyone, and a node that sent none would only be refused later, less
/// clearly.
pub fn read_token_file(p: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read fleet token file {}: {e}", p.display()))?;
    let t = text.lines().next().unwrap_or("").trim().to_owned();
    if t.is_empty() {
        return Err(format!("fleet token file {} is empty", p.display()));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_trimmed_and_empty_refused() {
        let dir = std::env::temp_dir().join(format!("herd-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "  s3cret \nignored\n").unwrap();
        assert_eq!(read_token_file(&f).unwrap(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token_file(&f).unwrap_err().contains("empty"));
        assert!(read_token_file(&dir.join("missing")).is_err());
    }
}

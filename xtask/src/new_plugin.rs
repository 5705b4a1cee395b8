//! `cargo xtask new-plugin --lang LANG NAME`: copy `templates/<language>/` to
//! `plugins/<language>/<NAME>/`, the template's name replaced by NAME.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::plugins::{self, Group};

/// The language names `--lang` accepts, and the language each means.
const ALIASES: &[(&str, &str)] = &[
    ("python", "python"),
    ("py", "python"),
    ("javascript", "javascript"),
    ("js", "javascript"),
    ("c", "c"),
];

pub fn run(root: &Path, args: &[&str]) -> Result<()> {
    let (lang, name) = match args {
        ["--lang", lang, name] | [name, "--lang", lang] => (*lang, *name),
        _ => bail!("usage: cargo xtask new-plugin --lang py|js|c NAME"),
    };
    let Some((_, language)) = ALIASES.iter().find(|(alias, _)| *alias == lang) else {
        bail!(
            "unknown language `{lang}`: py (python), js (javascript) or c; a Rust plugin is a \
             crate: copy plugins/add"
        );
    };
    let group = plugins::groups()
        .into_iter()
        .find(|(l, _)| l == language)
        .map(|(_, g)| g)
        .context("no builder for that language")?;
    plugins::check_name(name)?;
    let dest = create(root, group, name)?;
    println!(
        "created {}: edit it, then `cargo xtask plugins` builds target/plugins/{name}.wasm",
        dest.strip_prefix(root).unwrap_or(&dest).display()
    );
    Ok(())
}

/// Copy the template of `group` to `plugins/<group>/<name>`; return that directory.
fn create(root: &Path, group: Group, name: &str) -> Result<std::path::PathBuf> {
    let template = root.join("templates").join(group.dir);
    let dest = root.join("plugins").join(group.dir).join(name);
    if dest.exists() {
        bail!("{} already exists", dest.display());
    }
    let files = plugins::source_files(&template)?;
    if files.is_empty() {
        bail!("{} has no files", template.display());
    }
    for file in files {
        let relative = file.strip_prefix(&template).unwrap_or(&file);
        let target = dest.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let bytes = match String::from_utf8(bytes) {
            Ok(text) => without_template_notes(&text)
                .replace(group.template_name, name)
                .into_bytes(),
            Err(e) => e.into_bytes(),
        };
        fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(dest)
}

/// `text` without its template-only parts: the lines from `<!-- template-only -->` to
/// `<!-- /template-only -->`, both included.
fn without_template_notes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        match line.trim() {
            "<!-- template-only -->" => skipping = true,
            "<!-- /template-only -->" => skipping = false,
            _ if !skipping => out.push_str(line),
            _ => {}
        }
    }
    // The blank line before the note and the one after it: keep one.
    out.replace("\n\n\n", "\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_copied_with_the_new_name() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let root = std::env::temp_dir().join(format!("xtask-new-plugin-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (_, group) in plugins::groups() {
            let template = root.join("templates").join(group.dir);
            plugins::copy_sources(&repo.join("templates").join(group.dir), &template).unwrap();
            let dest = create(&root, group, "my-step").unwrap();
            let mut mentions = 0;
            for file in plugins::source_files(&dest).unwrap() {
                let text = fs::read_to_string(&file).unwrap();
                assert!(!text.contains(group.template_name), "{}", file.display());
                mentions += text.matches("my-step").count();
            }
            assert!(mentions > 0, "{}: the name is used", group.dir);
            let readme = fs::read_to_string(dest.join("README.md")).unwrap();
            assert!(readme.starts_with("# my-step\n"), "{readme}");
            assert!(!readme.contains("template-only"), "{readme}");
            assert!(create(&root, group, "my-step").is_err(), "exists already");
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn template_notes_are_left_out() {
        let text = "# x\n\n<!-- template-only -->\nonly here\n<!-- /template-only -->\n\nkept\n";
        assert_eq!(without_template_notes(text), "# x\n\nkept\n");
    }

    #[test]
    fn bad_arguments_are_explained() {
        let root = Path::new("/nonexistent");
        let err = run(root, &["--lang", "cobol", "x"]).unwrap_err();
        assert!(err.to_string().contains("unknown language"), "{err}");
        let err = run(root, &["--lang", "py", "Bad_Name"]).unwrap_err();
        assert!(err.to_string().contains("not a plugin name"), "{err}");
        assert!(run(root, &["x"]).is_err());
    }
}

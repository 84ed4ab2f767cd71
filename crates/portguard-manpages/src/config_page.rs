//! portguard.toml(5), generated from the `///` docs of the configuration
//! structs in crates/portguard-config/src/lib.rs (the prose before each
//! doctest) and the defaults of `Config::default()`, so the page says what
//! the parser does.

use anyhow::Context as _;
use roff::{Roff, bold, italic, roman};

/// The configuration crate's source, read when this generator is built.
pub const CONFIG_SOURCE: &str = include_str!("../../portguard-config/src/lib.rs");

/// One key of a section, as the page shows it.
#[derive(Debug)]
pub struct Key {
    pub name: String,
    pub default: Option<String>,
    pub doc: String,
}

/// One `[section]` (or `[[allow]]`) with its keys.
#[derive(Debug)]
pub struct Section {
    pub header: String,
    pub doc: String,
    pub keys: Vec<Key>,
}

/// The sections of `Config`, in the order its fields are declared.
pub fn sections(source: &str) -> anyhow::Result<Vec<Section>> {
    let file = syn::parse_file(source).context("parsing portguard-config/src/lib.rs")?;
    let structs: Vec<&syn::ItemStruct> = file
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Struct(s) => Some(s),
            _ => None,
        })
        .collect();
    let find = |name: &str| {
        structs
            .iter()
            .find(|s| s.ident == name)
            .copied()
            .with_context(|| format!("struct {name} not found in portguard-config"))
    };
    let defaults = toml::Value::try_from(portguard_config::Config::default())
        .context("serialising Config::default()")?;

    let mut sections = Vec::new();
    for field in named_fields(find("Config")?) {
        let section = ident(field)?;
        let (header, ty) = match section.as_str() {
            // `allow: Vec<AllowEntry>`: a list of tables.
            "allow" => ("[[allow]]".to_string(), "AllowEntry".to_string()),
            _ => (format!("[{section}]"), type_name(&field.ty)?),
        };
        // "`[guard]`: how the guard judges traffic." -> the part after the colon.
        let doc = prose(&field.attrs);
        let doc = doc
            .strip_prefix(&format!("`{header}`:"))
            .map(str::trim)
            .unwrap_or(&doc);
        let doc = capitalized(doc);
        let mut keys = Vec::new();
        for key in named_fields(find(&ty)?) {
            let name = ident(key)?;
            // Bookkeeping (where a value was written), not a key of the
            // file: `#[serde(skip)]` fields such as `group_position`.
            if serde_skipped(key) {
                continue;
            }
            let shown = match name.as_str() {
                // Where the entry was written, not a key of the file.
                "origin" => continue,
                // `target` is written as either `port` or `container`.
                "target" => "port | container".to_string(),
                _ => name.clone(),
            };
            let default = defaults
                .get(&section)
                .and_then(|table| table.get(&name))
                .map(|value| value.to_string());
            keys.push(Key {
                name: shown,
                default,
                doc: prose(&key.attrs),
            });
        }
        sections.push(Section { header, doc, keys });
    }
    Ok(sections)
}

/// Whether the field carries `#[serde(skip)]`.
fn serde_skipped(field: &syn::Field) -> bool {
    field.attrs.iter().any(|attr| {
        let mut skip = false;
        if attr.path().is_ident("serde") {
            let _ = attr.parse_nested_meta(|meta| {
                skip |= meta.path.is_ident("skip");
                Ok(())
            });
        }
        skip
    })
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn named_fields(item: &syn::ItemStruct) -> impl Iterator<Item = &syn::Field> {
    item.fields.iter().filter(|f| f.ident.is_some())
}

fn ident(field: &syn::Field) -> anyhow::Result<String> {
    field
        .ident
        .as_ref()
        .map(|i| i.to_string())
        .context("unnamed field")
}

fn type_name(ty: &syn::Type) -> anyhow::Result<String> {
    match ty {
        syn::Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .context("empty type path"),
        _ => anyhow::bail!("unexpected field type in Config"),
    }
}

/// The doc comment's text up to its first code block (the doctest).
fn prose(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        let syn::Meta::NameValue(nv) = &attr.meta else {
            continue;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(text),
            ..
        }) = &nv.value
        else {
            continue;
        };
        let text = text.value();
        let line = text.strip_prefix(' ').unwrap_or(&text).to_string();
        if line.trim_start().starts_with("```") {
            break;
        }
        lines.push(line);
    }
    lines.join("\n").trim().to_string()
}

/// The example in the crate's own documentation (its first doctest): the
/// TOML between `r#"` and `"#`.
fn crate_example(source: &str) -> Option<String> {
    let docs: Vec<&str> = source
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = docs.iter().position(|l| l.contains("r#\""))?;
    let len = docs[start + 1..]
        .iter()
        .position(|l| l.starts_with("\"#"))?;
    Some(
        docs[start + 1..start + 1 + len]
            .join("\n")
            .trim()
            .to_string(),
    )
}

/// Markdown `code` spans become bold, the rest roman.
fn inline(text: &str) -> Vec<roff::Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

/// Paragraphs and `* ` bullet lists of a doc comment.
fn paragraphs(page: &mut Roff, doc: &str) {
    for para in doc.split("\n\n") {
        let para = para.trim();
        if para.is_empty() {
            continue;
        }
        if para.starts_with("* ") {
            for item in para.split("\n* ") {
                let item = item.trim_start_matches("* ");
                let item = item.split_whitespace().collect::<Vec<_>>().join(" ");
                page.control("IP", ["\\(bu", "2"]).text(inline(&item));
            }
        } else {
            let text = para.split_whitespace().collect::<Vec<_>>().join(" ");
            page.control("PP", []).text(inline(&text));
        }
    }
}

/// The whole page, in roff.
pub fn render(source: &str) -> anyhow::Result<String> {
    let sections = sections(source)?;
    let version = env!("CARGO_PKG_VERSION");
    let mut page = Roff::new();
    page.control(
        "TH",
        [
            "PORTGUARD.TOML",
            "5",
            "",
            &format!("portguard {version}"),
            "portguard",
        ],
    );
    page.control("SH", ["NAME"])
        .text([roman("portguard.toml - configuration of portguardd, the firewall guard for Docker's published ports")]);
    page.control("SH", ["SYNOPSIS"])
        .text([bold(portguard_config::DEFAULT_CONFIG_PATH)])
        .control("br", [])
        .text([bold("/etc/portguard/conf.d/"), italic("*"), bold(".toml")]);
    page.control("SH", ["DESCRIPTION"]);
    paragraphs(
        &mut page,
        "portguardd(8) reads the main file and then every `conf.d/*.toml` beside it in \
         file-name order. In a drop-in, single values override what came before (a list \
         such as `trusted_interfaces` is replaced whole) and `[[allow]]` entries are added. \
         Unknown keys are errors, answered with the nearest known key. Every mistake is \
         reported, all of them at once, in file and line order, as \
         `file:line:column: message`: \
         `guardctl check` validates, `guardctl plan` prints the resulting nft ruleset, \
         `guardctl reload` (or `systemctl reload portguard`) applies it.\n\n\
         A configuration the daemon refuses never weakens protection: on reload the last \
         good ruleset stays in force; at start the daemon installs the last good \
         configuration it kept under /var/lib/portguard, else closes every published port, \
         and `guardctl status` shows the error.",
    );
    for section in &sections {
        page.control("SH", [section.header.as_str()]);
        paragraphs(&mut page, &section.doc);
        if section.header == "[[allow]]" {
            paragraphs(
                &mut page,
                "Each entry has exactly one of `port` and `container`.",
            );
        }
        for key in &section.keys {
            let mut head = vec![bold(&key.name)];
            if let Some(default) = &key.default {
                head.push(roman(" (default: "));
                head.push(bold(default));
                head.push(roman(")"));
            }
            page.control("TP", []).text(head);
            let text = key.doc.split_whitespace().collect::<Vec<_>>().join(" ");
            // The first paragraph sits in the tagged paragraph; further
            // ones (lists) follow as indented paragraphs.
            let (first, rest) = key.doc.split_once("\n\n").unwrap_or((&key.doc, ""));
            if rest.is_empty() {
                page.text(inline(&text));
            } else {
                let first = first.split_whitespace().collect::<Vec<_>>().join(" ");
                page.text(inline(&first));
                page.control("RS", []);
                paragraphs(&mut page, rest);
                page.control("RE", []);
            }
        }
    }
    if let Some(example) = crate_example(source) {
        page.control("SH", ["EXAMPLE"]);
        page.control("EX", []);
        for line in example.lines() {
            page.text([roman(line)]);
        }
        page.control("EE", []);
    }
    page.control("SH", ["FILES"]);
    for (path, what) in [
        (
            portguard_config::DEFAULT_CONFIG_PATH,
            "the main file (a conffile)",
        ),
        (
            "/etc/portguard/conf.d/",
            "drop-ins, read in file-name order",
        ),
        (
            "/var/lib/portguard/",
            "the last configuration the daemon applied",
        ),
    ] {
        page.control("TP", [])
            .text([bold(path)])
            .text([roman(what)]);
    }
    page.control("SH", ["SEE ALSO"]).text([
        bold("portguardd"),
        roman("(8), "),
        bold("guardctl"),
        roman("(8), "),
        italic("/usr/share/doc/portguard/configuration.md"),
    ]);
    Ok(page.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs_reference() -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
        )
        .unwrap()
    }

    #[test]
    fn every_section_and_key_of_the_configuration_reference_is_on_the_page() {
        let page = render(CONFIG_SOURCE).unwrap();
        let reference = docs_reference();
        let mut keys = 0;
        for line in reference.lines() {
            // Table rows of docs/configuration.md: "| `key` | default | meaning |".
            if let Some(rest) = line.strip_prefix("| `")
                && let Some((key, _)) = rest.split_once('`')
            {
                keys += 1;
                assert!(
                    page.contains(&format!("\\fB{key}")),
                    "portguard.toml(5) lacks `{key}`"
                );
            }
        }
        assert!(
            keys >= 15,
            "only {keys} keys found in docs/configuration.md"
        );
        for header in ["[guard]", "[ipv6]", "[docker]", "[control]", "[[allow]]"] {
            assert!(
                page.contains(&format!(".SH {header}"))
                    || page.contains(&format!(".SH \"{header}\"")),
                "{header}"
            );
        }
    }

    #[test]
    fn keys_carry_their_doc_prose_without_doctests_and_the_real_defaults() {
        let sections = sections(CONFIG_SOURCE).unwrap();
        let guard = &sections[0];
        assert_eq!(guard.header, "[guard]");
        let mode = guard.keys.iter().find(|k| k.name == "mode").unwrap();
        assert_eq!(mode.default.as_deref(), Some("\"enforce\""));
        assert!(mode.doc.contains("\"audit\""));
        assert!(!mode.doc.contains("```") && !mode.doc.contains("assert"));
        let control = sections.iter().find(|s| s.header == "[control]").unwrap();
        let group = control.keys.iter().find(|k| k.name == "group").unwrap();
        assert_eq!(group.default, None, "an unset option has no default");
        let allow = sections.last().unwrap();
        assert_eq!(allow.header, "[[allow]]");
        let names: Vec<&str> = allow.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["port | container", "proto", "from", "comment"]);
    }

    /// Issue 22: the page documented `[control] group_position`, which
    /// check rejects. Every key the page documents, written with a value
    /// of its kind, is a file `guardctl check` accepts.
    #[test]
    fn every_key_on_the_page_is_accepted_by_check() {
        let sections = sections(CONFIG_SOURCE).unwrap();
        let mut checked = 0;
        for section in &sections {
            for key in &section.keys {
                for name in key.name.split(" | ") {
                    let value = key.default.clone().unwrap_or_else(|| {
                        match name {
                            "external_interfaces" => "[\"eth0\"]",
                            "group" => "\"root\"",
                            "port" => "8080",
                            "container" => "\"web\"",
                            "proto" => "\"both\"",
                            "from" => "[\"192.0.2.0/24\"]",
                            _ => "\"text\"",
                        }
                        .to_string()
                    });
                    // An [[allow]] entry needs its target.
                    let target = match (section.header.as_str(), name) {
                        ("[[allow]]", "port" | "container") => "",
                        ("[[allow]]", _) => "port = 8080\n",
                        _ => "",
                    };
                    let text = format!("{}\n{target}{name} = {value}\n", section.header);
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("portguard.toml");
                    std::fs::write(&path, &text).unwrap();
                    if let Err(e) = portguard_config::Config::load(&path) {
                        panic!(
                            "portguard.toml(5) documents `{name}`, which check refuses:\n{text}\n{e}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 15, "only {checked} keys on the page");
    }

    #[test]
    fn a_field_without_a_struct_is_an_error_not_a_silent_gap() {
        let broken = "pub struct Config { pub guard: Missing }";
        let error = sections(broken).unwrap_err().to_string();
        assert!(error.contains("Missing"), "{error}");
    }
}

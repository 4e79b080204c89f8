//! The README stays true: its SQL examples are tested ones.

use std::path::Path;

/// The README's SQL examples are among `docs/schema.md`'s, which the schema tests run on both
/// server generations.
#[test]
fn readme_sql_examples_are_tested_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let blocks = |text: &str| -> Vec<String> {
        text.split("```sql\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .map(|sql| sql.trim().to_owned())
            .collect()
    };
    let readme = blocks(&std::fs::read_to_string(root.join("README.md")).expect("README"));
    let docs = blocks(&std::fs::read_to_string(root.join("docs/schema.md")).expect("schema reference"));
    assert!(!readme.is_empty(), "the README shows example SQL");
    for sql in readme {
        assert!(
            docs.contains(&sql),
            "README query not among docs/schema.md's tested examples:\n{sql}"
        );
    }
}

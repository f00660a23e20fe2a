//! The statements of a load, as text. Identifiers (table, columns) come from the configuration and
//! the files' headers, so they are always quoted; values are bound where the protocol allows, and
//! quoted as literals where it does not (Redshift's `BatchExecuteStatement`).

use choreo_domain::extract::LoadMode;

/// `name` as a quoted identifier: `"name"`, with `"` doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name, `table` or `schema.table`, each part quoted.
pub fn table(name: &str) -> String {
    name.split('.').map(ident).collect::<Vec<_>>().join(".")
}

/// A string literal: `'value'`, with `'` doubled. (Standard-conforming strings: a backslash is an
/// ordinary character, as in PostgreSQL and Redshift by default.)
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"a", "b", "c"`.
pub fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The staging table an upsert copies into first.
pub const STAGE: &str = "choreo_load_stage";

/// The temporary staging table of an upsert, shaped as the target.
pub fn create_stage(target: &str) -> String {
    format!(
        "CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP",
        ident(STAGE),
        table(target)
    )
}

/// PostgreSQL: deletes the rows of the keys bound as `$1` (a text array).
pub fn delete_keys_bound(target: &str, key_column: &str) -> String {
    format!(
        "DELETE FROM {} WHERE {} = ANY($1)",
        table(target),
        ident(key_column)
    )
}

/// PostgreSQL: `COPY <into> (<columns>) FROM STDIN` for a CSV file with a header line.
pub fn copy_from_stdin(into: &str, columns: &[String]) -> String {
    format!(
        "COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)",
        into,
        column_list(columns)
    )
}

/// PostgreSQL: the staged rows into the target, updating those whose primary key is there.
pub fn upsert_from_stage(target: &str, columns: &[String], primary_key: &[String]) -> String {
    let cols = column_list(columns);
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !primary_key.contains(c))
        .map(|c| format!("{0} = EXCLUDED.{0}", ident(c)))
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM {} ON CONFLICT ({}) {action}",
        table(target),
        ident(STAGE),
        column_list(primary_key),
    )
}

/// The mode's name, for messages.
pub fn mode_name(mode: LoadMode) -> &'static str {
    mode.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(table("sales.rows"), r#""sales"."rows""#);
        assert_eq!(literal("o'brien"), "'o''brien'");
    }

    #[test]
    fn postgres_statements_read_as_expected() {
        let c = cols(&["id", "campaign", "amount"]);
        assert_eq!(
            copy_from_stdin(&table("s.t"), &c),
            r#"COPY "s"."t" ("id", "campaign", "amount") FROM STDIN WITH (FORMAT csv, HEADER true)"#
        );
        assert_eq!(
            delete_keys_bound("t", "campaign"),
            r#"DELETE FROM "t" WHERE "campaign" = ANY($1)"#
        );
        assert_eq!(
            upsert_from_stage("t", &c, &cols(&["id"])),
            r#"INSERT INTO "t" ("id", "campaign", "amount") SELECT "id", "campaign", "amount" FROM "choreo_load_stage" ON CONFLICT ("id") DO UPDATE SET "campaign" = EXCLUDED."campaign", "amount" = EXCLUDED."amount""#
        );
        assert!(upsert_from_stage("t", &cols(&["id"]), &cols(&["id"])).ends_with("DO NOTHING"));
    }
}

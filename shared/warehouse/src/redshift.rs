//! A plan as Redshift statements, for the Data API's `BatchExecuteStatement` (which runs its
//! statements in one transaction, and takes no parameters: values are quoted literals).
//!
//! Redshift reads the files from S3 itself (`COPY ... FROM 's3://...' IAM_ROLE ...`): nothing
//! passes through the job. `upsert` stages into a temporary table and replaces matching rows
//! (`DELETE ... USING`, then `INSERT`), which works on every Redshift release.

use crate::plan::LoadPlan;
use crate::sql::{self, ident, literal, table};
use choreo_domain::extract::LoadMode;

/// The statements that load `plan`, whose files are in `bucket`, with the header's `columns`, as
/// the role `iam_role`.
pub fn statements(
    plan: &LoadPlan,
    bucket: &str,
    columns: &[String],
    iam_role: &str,
) -> Vec<String> {
    let target = table(&plan.table);
    let mut out = Vec::new();
    let into = match plan.mode {
        LoadMode::Replace => {
            let key_column = plan.key_column.as_deref().unwrap_or_default();
            let keys: Vec<String> = plan.keys().into_iter().map(literal).collect();
            out.push(format!(
                "DELETE FROM {target} WHERE {} IN ({})",
                ident(key_column),
                keys.join(", ")
            ));
            target.clone()
        }
        LoadMode::Append => target.clone(),
        LoadMode::Upsert => {
            out.push(format!(
                "CREATE TEMP TABLE {} (LIKE {target})",
                ident(sql::STAGE)
            ));
            ident(sql::STAGE)
        }
    };
    for f in &plan.files {
        out.push(copy_from_s3(
            &into,
            columns,
            bucket,
            &f.object_key,
            iam_role,
        ));
    }
    if plan.mode == LoadMode::Upsert {
        let stage = ident(sql::STAGE);
        let on: Vec<String> = plan
            .primary_key
            .iter()
            .map(|c| format!("{target}.{0} = {stage}.{0}", ident(c)))
            .collect();
        out.push(format!(
            "DELETE FROM {target} USING {stage} WHERE {}",
            on.join(" AND ")
        ));
        let cols = sql::column_list(columns);
        out.push(format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}"
        ));
        out.push(format!("DROP TABLE {stage}"));
    }
    out
}

/// `COPY` of one gzip CSV object with a header line.
pub fn copy_from_s3(
    into: &str,
    columns: &[String],
    bucket: &str,
    key: &str,
    iam_role: &str,
) -> String {
    format!(
        "COPY {into} ({}) FROM {} IAM_ROLE {} FORMAT AS CSV IGNOREHEADER 1 GZIP",
        sql::column_list(columns),
        literal(&format!("s3://{bucket}/{key}")),
        literal(iam_role)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanFile;

    fn plan(mode: LoadMode) -> LoadPlan {
        let file = |k: &str| PlanFile {
            key: k.into(),
            object_key: format!("campaigns/{k}/campaigns_20261203T030000Z.csv.gz"),
            path: Default::default(),
        };
        LoadPlan {
            table: "sales.campaign_rows".into(),
            mode,
            key_column: Some("campaign".into()),
            primary_key: vec!["id".into()],
            files: vec![file("spring"), file("o'neil")],
        }
    }

    fn columns() -> Vec<String> {
        vec!["id".into(), "campaign".into(), "amount".into()]
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/choreo-redshift";

    #[test]
    fn replace_deletes_the_batch_keys_then_copies_each_file() {
        let s = statements(&plan(LoadMode::Replace), "choreo-input", &columns(), ROLE);
        assert_eq!(
            s,
            [
                r#"DELETE FROM "sales"."campaign_rows" WHERE "campaign" IN ('spring', 'o''neil')"#,
                r#"COPY "sales"."campaign_rows" ("id", "campaign", "amount") FROM 's3://choreo-input/campaigns/spring/campaigns_20261203T030000Z.csv.gz' IAM_ROLE 'arn:aws:iam::123456789012:role/choreo-redshift' FORMAT AS CSV IGNOREHEADER 1 GZIP"#,
                r#"COPY "sales"."campaign_rows" ("id", "campaign", "amount") FROM 's3://choreo-input/campaigns/o''neil/campaigns_20261203T030000Z.csv.gz' IAM_ROLE 'arn:aws:iam::123456789012:role/choreo-redshift' FORMAT AS CSV IGNOREHEADER 1 GZIP"#,
            ]
        );
    }

    #[test]
    fn append_only_copies() {
        let s = statements(&plan(LoadMode::Append), "b", &columns(), ROLE);
        assert_eq!(s.len(), 2);
        assert!(
            s.iter()
                .all(|s| s.starts_with(r#"COPY "sales"."campaign_rows""#))
        );
    }

    #[test]
    fn upsert_stages_then_replaces_matching_rows() {
        let s = statements(&plan(LoadMode::Upsert), "b", &columns(), ROLE);
        assert_eq!(
            s[0],
            r#"CREATE TEMP TABLE "choreo_load_stage" (LIKE "sales"."campaign_rows")"#
        );
        assert!(
            s[1].starts_with(
                r#"COPY "choreo_load_stage" ("id", "campaign", "amount") FROM 's3://b/"#
            )
        );
        assert_eq!(
            s[3],
            r#"DELETE FROM "sales"."campaign_rows" USING "choreo_load_stage" WHERE "sales"."campaign_rows"."id" = "choreo_load_stage"."id""#
        );
        assert_eq!(
            s[4],
            r#"INSERT INTO "sales"."campaign_rows" ("id", "campaign", "amount") SELECT "id", "campaign", "amount" FROM "choreo_load_stage""#
        );
        assert_eq!(s[5], r#"DROP TABLE "choreo_load_stage""#);
    }
}

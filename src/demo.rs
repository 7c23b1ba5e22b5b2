//! The demo data set (`serve --demo`): FHIR JSON files under `demo/`, embedded in the binary and
//! loaded idempotently (a resource that already exists is left alone).

use include_dir::{Dir, include_dir};

use crate::access::Access;
use crate::error::{FhirError, FhirResult};
use crate::fhir::parse;
use crate::interactions::{Ctx, write_version};
use crate::store::{Store, WriteMethod};

static DEMO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/demo");

/// Load every demo resource not yet present; returns how many were written.
pub fn load(store: &dyn Store, ctx: &Ctx) -> FhirResult<usize> {
    let mut files: Vec<_> = DEMO
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort_by_key(|f| f.path());
    let mut tx = store.begin()?;
    let mut written = 0;
    for file in files {
        let resource = parse::parse_resource(file.contents()).map_err(|e| {
            FhirError::internal(format!("{}: {e}: {:?}", file.path().display(), e.issues()))
        })?;
        let rtype = parse::resource_type(&resource).to_string();
        let id = resource
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FhirError::internal(format!("{} has no id", file.path().display())))?
            .to_string();
        if tx.current(&rtype, &id)?.is_some() {
            continue;
        }
        write_version(
            ctx,
            &Access::server(),
            tx.as_mut(),
            &rtype,
            &id,
            None,
            WriteMethod::Update,
            resource,
        )?;
        written += 1;
    }
    tx.commit()?;
    Ok(written)
}

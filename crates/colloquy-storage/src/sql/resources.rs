//! What both backends' SQL for prompts, tools and configs ([`crate::ResourceStore`]) agrees
//! on: the tables' column list, its decoder and the listing.

use super::{Clause, Decode, Listing, Value};
use crate::{
    storable_text, PageRequest, ResourceFilter, ResourceKind, ResourceVersion, StoreResult,
};
use uuid::Uuid;

/// The resources with their versions (aliases `r` and `v`), for [`RESOURCE_COLUMNS`].
pub const RESOURCE_FROM: &str =
    "evi_resources r JOIN evi_resource_versions v ON v.resource_id = r.id";

/// Columns of a version ([`resource_version`]), from [`RESOURCE_FROM`].
pub const RESOURCE_COLUMNS: &str =
    "r.id, r.name, v.version, v.version_description, r.created_on, v.modified_on, v.body";

/// [`RESOURCE_COLUMNS`].
pub fn resource_version<D: Decode>(r: &D::Row) -> StoreResult<ResourceVersion> {
    Ok(ResourceVersion {
        id: D::uuid(r, 0)?,
        name: D::text(r, 1)?,
        version: D::int(r, 2)?,
        version_description: D::opt_text(r, 3)?,
        created_on: D::int(r, 4)?,
        modified_on: D::int(r, 5)?,
        body: D::text(r, 6)?,
    })
}

impl Listing {
    /// An account's versions of `kind` ([`RESOURCE_COLUMNS`] from [`RESOURCE_FROM`]) that
    /// pass `filter`, by the resource's creation, then its id, then version, ascending.
    pub fn resources(
        user_id: Uuid,
        kind: ResourceKind,
        filter: &ResourceFilter,
        page: PageRequest,
    ) -> Self {
        let mut c = Clause::default();
        c.and("r.user_id", " = ", Value::Uuid(user_id));
        c.and("r.kind", " = ", Value::Text(kind.as_str().to_string()));
        if let Some(id) = filter.id {
            c.and("r.id", " = ", Value::Uuid(id));
        }
        if let Some(name) = &filter.name {
            // As stored (a NUL would also fail the query on PostgreSQL).
            c.and(
                "r.name",
                " = ",
                Value::Text(storable_text(name).into_owned()),
            );
        }
        if filter.most_recent_only {
            c.sql(
                " AND v.version = (SELECT MAX(m.version) FROM evi_resource_versions m \
                 WHERE m.resource_id = r.id)",
            );
        }
        Self {
            filter: c,
            keys: vec!["r.created_on", "r.id", "v.version"],
            ascending: true,
            page,
            counted: None,
            counts_of: None,
            buckets: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Piece;

    fn render(c: &Clause) -> String {
        c.0.iter()
            .map(|p| match p {
                Piece::Sql(s) => s.to_string(),
                Piece::Bind(v) => format!("?{v:?}"),
                Piece::Says(t) => format!("says({t})"),
            })
            .collect()
    }

    #[test]
    fn a_resource_listing_filters_and_orders_by_creation_then_version() {
        let user = Uuid::nil();
        let page = PageRequest {
            number: 2,
            size: 5,
            ascending: true,
        };
        let all = Listing::resources(user, ResourceKind::Tool, &ResourceFilter::default(), page);
        assert_eq!(
            render(&all.filter),
            format!(" WHERE r.user_id = ?Uuid({user}) AND r.kind = ?Text(\"tool\")")
        );
        let w = all.window(100).unwrap();
        assert_eq!(
            w.order,
            " ORDER BY r.created_on ASC, r.id ASC, v.version ASC"
        );
        assert_eq!(render(&w.limit), " LIMIT ?Int(5) OFFSET ?Int(10)");
        let filter = ResourceFilter {
            id: Some(user),
            name: Some("a\0".into()),
            most_recent_only: true,
        };
        let some = Listing::resources(user, ResourceKind::Config, &filter, page);
        let sql = render(&some.filter);
        assert!(sql.contains(&format!("AND r.id = ?Uuid({user})")), "{sql}");
        assert!(sql.contains("AND r.name = ?Text(\"a\u{FFFD}\")"), "{sql}");
        assert!(sql.ends_with("WHERE m.resource_id = r.id)"), "{sql}");
        assert_eq!(RESOURCE_COLUMNS.split(", ").count(), 7);
    }
}

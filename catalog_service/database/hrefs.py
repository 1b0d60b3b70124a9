"""Stored hrefs made relative to the API's root, as tilekeeper now writes them.

Until then the ingest wrote the local product store's files and the links between
tilekeeper's own items (a product's ``derived_from`` job item, a job item's ``related``
products, product versions, a product collection's campaign) absolute, at the address
the ingest reached the API at: ``http://127.0.0.1:8080/products/files/...`` stayed so
behind a proxy or on another port. Stored relative, they are resolved against each
request's base URL when served (assets in api/clients.py ``as_served``, links by
stac-fastapi-pgstac). Only campaigns' and product collections' items are touched, and
only hrefs of those two shapes: anything else (object storage, a back-end's ``via``)
stays as it was.
"""

from __future__ import annotations

# An absolute URL to the API (any host, any path prefix) followed by the part kept: its
# one capturing group is what ``substring`` returns.
_ORIGIN = r"^https?://[^/?#]+(?:/[^?#]*)?/"
_FILES = _ORIGIN + r"products/files/"
_ITEM = _ORIGIN + r"(collections/[^/?#]+/items/[^/?#]+)$"
_COLLECTION = _ORIGIN + r"(collections/[^/?#]+)$"
# A campaign's products, or a collection tilekeeper's ingest created (as api/queryables.py
# tells them).
_PRODUCT_COLLECTION = """(c.content ? 'tilekeeper:products_of' OR EXISTS (
    SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(c.content->'providers') = 'array'
                                            THEN c.content->'providers' ELSE '[]'::jsonb END) p
    WHERE p->>'name' = 'tilekeeper' AND p->'roles' ? 'processor'))"""
_OWN_LINKS = (
    "('related', 'derived_from', 'latest-version', 'successor-version', 'predecessor-version')"
)

MIGRATION_SQL = f"""
WITH ours AS (
    SELECT i.collection, i.id, i.content,
        (SELECT jsonb_object_agg(a.key, CASE
                WHEN jsonb_typeof(a.value) = 'object' AND a.value->>'href' ~ '{_FILES}'
                THEN jsonb_set(a.value, '{{href}}', to_jsonb(
                    regexp_replace(a.value->>'href', '{_FILES}', 'products/files/')))
                ELSE a.value END)
         FROM jsonb_each(CASE WHEN jsonb_typeof(i.content->'assets') = 'object'
                              THEN i.content->'assets' ELSE '{{}}'::jsonb END) a) AS assets,
        (SELECT jsonb_agg(CASE
                WHEN jsonb_typeof(l.value) = 'object' AND l.value->>'rel' IN {_OWN_LINKS}
                     AND l.value->>'href' ~ '{_ITEM}'
                THEN jsonb_set(l.value, '{{href}}', to_jsonb(
                    substring(l.value->>'href' from '{_ITEM}')))
                ELSE l.value END ORDER BY l.n)
         FROM jsonb_array_elements(CASE WHEN jsonb_typeof(i.content->'links') = 'array'
                                        THEN i.content->'links' ELSE '[]'::jsonb END)
              WITH ORDINALITY l(value, n)) AS links
    FROM pgstac.items i JOIN pgstac.collections c ON c.id = i.collection
    WHERE c.content ? 'tilekeeper:campaign' OR {_PRODUCT_COLLECTION}
)
UPDATE pgstac.items i SET content = i.content
    || CASE WHEN ours.assets IS NULL THEN '{{}}'::jsonb
            ELSE jsonb_build_object('assets', ours.assets) END
    || CASE WHEN ours.links IS NULL THEN '{{}}'::jsonb
            ELSE jsonb_build_object('links', ours.links) END
FROM ours
WHERE i.collection = ours.collection AND i.id = ours.id
  AND (ours.assets IS DISTINCT FROM i.content->'assets'
       OR ours.links IS DISTINCT FROM i.content->'links')
  AND (ours.assets IS NOT NULL OR ours.links IS NOT NULL);

UPDATE pgstac.collections c SET content = jsonb_set(c.content, '{{links}}', (
    SELECT jsonb_agg(CASE
            WHEN jsonb_typeof(l.value) = 'object' AND l.value->>'rel' = 'related'
                 AND l.value->>'href' ~ '{_COLLECTION}'
            THEN jsonb_set(l.value, '{{href}}', to_jsonb(
                substring(l.value->>'href' from '{_COLLECTION}')))
            ELSE l.value END ORDER BY l.n)
    FROM jsonb_array_elements(c.content->'links') WITH ORDINALITY l(value, n)))
WHERE {_PRODUCT_COLLECTION} AND jsonb_typeof(c.content->'links') = 'array'
  AND jsonb_array_length(c.content->'links') > 0;
"""

"""What a deleted collection takes along from tilekeeper's own tables: one trigger
function, written out again by each migration that adds a table to it. It runs as its
owner (SECURITY DEFINER): pgstac's delete_collection runs as pgstac_admin, which may not
enter this schema."""

from __future__ import annotations


def forget_sql(tables: tuple[str, ...]) -> str:
    deletes = "".join(
        f"    DELETE FROM tilekeeper.{t} WHERE collection = OLD.id;\n" for t in tables
    )
    return f"""
CREATE OR REPLACE FUNCTION tilekeeper.forget_collection() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = tilekeeper, pg_temp AS $$
BEGIN
{deletes}    RETURN OLD;
END;
$$;
"""

-- Why a lane runs at its speed (the source of each learned value) and the limits its tenant
-- pinned: one JSON document per lane, written through by `LaneStore` with the rest.
ALTER TABLE lanes ADD COLUMN detail text;

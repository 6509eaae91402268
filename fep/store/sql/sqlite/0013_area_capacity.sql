-- fep schema 13 (SQLite): an area's rated transformer capacity in kVA (load analysis,
-- fep.analysis.load), decimal text; NULL when not given. Same as sql/postgresql/0013.
ALTER TABLE areas ADD COLUMN capacity TEXT NULL;

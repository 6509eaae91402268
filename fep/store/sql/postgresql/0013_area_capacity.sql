-- fep schema 13 (PostgreSQL): an area's rated transformer capacity in kVA (load analysis,
-- fep.analysis.load); NULL when not given. Same as sql/sqlite/0013.
ALTER TABLE areas ADD COLUMN capacity numeric NULL;

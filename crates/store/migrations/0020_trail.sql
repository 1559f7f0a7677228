-- Placeholder: the trail work replaces this file (a fresh database runs it once).
SELECT 1;

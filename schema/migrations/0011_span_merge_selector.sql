-- Fewer rewrites of span rows by background merges. Merging otel_traces parts was half of
-- the engine's CPU per stored span (measured: 21 us/row with merges, 11 without). With the
-- default merge selector (base 5, and a heuristic that narrows merges while a partition has
-- few parts) each row is rewritten about log5(part size / insert size) times; base 10 merges
-- ~10 similar parts at once, so a row is rewritten ~30 % fewer times over its life, for up
-- to ~10 parts per size level in a day partition instead of ~5 (docs/benchmarks.md).
ALTER TABLE {db}.otel_traces MODIFY SETTING merge_selector_base = 10, merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0;

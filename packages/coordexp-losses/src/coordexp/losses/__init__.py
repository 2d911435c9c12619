"""coordexp.losses: the built-in objectives and diagnostics (spec 02, 05 §5.3).

Objectives (entry-point group ``coordexp.objectives``): ``token_ce`` (:mod:`.token_ce`),
``coord_reg`` (:mod:`.coord_reg`), ``bbox_geo`` (:mod:`.bbox_geo`). Diagnostics
(``coordexp.diagnostics``): ``coord_diag`` (:mod:`.coord_diag`), ``box_diag`` (:mod:`.box_diag`).
The pipeline finds them through their entry points only; import the submodules directly to use a
class in code. Shared pieces: :mod:`.masking` (the spec 02 §2.4 row-weight table),
:mod:`.coord_terms` (per-row coordinate terms), :mod:`.config_fields` (strict Config fields).
"""

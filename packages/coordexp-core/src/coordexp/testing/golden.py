"""The golden values of spec 05 §5.4: default-pipeline checksums per trainer variant and the
canonical Stage-1 payload they hash. Plugin authors can check a resolved default pipeline against
them; the project's own tests import them from here so the spec text is written down once."""

from __future__ import annotations

GOLDEN_CHECKSUMS: dict[str, str] = {
    "stage1": "649c34fd9ef55088116076203fd2728ee2ee87e39bef64187313401977cb9f8f",
    "stage2_two_channel": "b3d2aaf6928bc4b701f1a1e52f5655b98faa07f3987176f1d53b7353eb6d2a63",
    "stage2_rollout_aligned": "8c6c3f05a6828f0956605ec20a3ae3bed16a63153319539cfcde66f0f426faf7",
}

#: Canonical JSON (sorted keys, no spaces) of the default Stage-1 pipeline payload.
STAGE1_PAYLOAD = (
    '{"diagnostics":[{"channels":["A"],"config":{"acc_top_k":5},"enabled":true,"name":"coord_diag","weight":1.0}],'
    '"objective":[{"channels":["A"],"config":{"desc_ce_weight":1.0,"rollout_fn_desc_weight":1.0,'
    '"rollout_matched_prefix_struct_weight":1.0,"self_context_struct_weight":0.0,"struct_ce_weight":1.0},'
    '"enabled":true,"name":"token_ce","weight":1.0},{"channels":["A"],"config":{"coord_ce_weight":0.0,'
    '"coord_gate_weight":1.0,"ehuber_weight":0.0,"el1_weight":0.0,"entropy_weight":0.0,"huber_delta":0.001,'
    '"soft_ce_weight":1.0,"target_sigma":2.0,"target_truncate":null,"temperature":1.0,"text_gate_weight":0.0,'
    '"w1_weight":1.0},"enabled":true,"name":"coord_reg","weight":1.0}],"trainer_variant":"stage1"}'
)

"""The configured loss pipeline.

Submodules: ``spec`` (YAML structuring, validation, ``resolve_pipeline`` → ``ResolvedPipeline``),
``manifests`` (default manifests and flat knobs), ``checksum`` (canonical JSON, pipeline
checksum), ``runner`` (``PipelineRunner``). Import from the submodules.
"""

"""Plugin system: pluggy hookspecs and manager, entry-point module registry, module protocol.

Submodules: ``hookspecs`` (lifecycle hooks), ``manager`` (``get_plugin_manager``), ``registry``
(``ModuleRegistry`` over the ``coordexp.*`` entry-point groups), ``protocol`` (module base
classes, ``AtomTerm``, ``ModuleOutput``, ``Strategy``). Import from the submodules.
"""

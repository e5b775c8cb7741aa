"""From a registered version to an endpoint: the KServe InferenceService of a version or alias, and the
checks that what we register is what a server loads.

    vllm_lora.py          an adapter folder checked as vLLM's LoRA loader reads it
    locate.py             where a version's files are (its pyfunc data, the run's adapter, the base model)
    inference_service.py  the InferenceService for the merged form or base + LoRA adapter (KServe's HF runtime)
    handoff.py            the choices (form, backend, base URI) and the manifest of a version
    deploy.py             the deploy step: create or replace the InferenceService when a version is champion
    commands.py           ``fora serve-manifest`` (YAML on stdout or in a file; ``--apply``)

The ``serve`` section of the run config is ``config/serve.py``. Imports ``config``, ``runtime`` and
``registry``; the deploy component and the CLI call it.
"""

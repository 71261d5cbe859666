"""Jobs: the orchestration behind every geoembed command, one typed call each.

A job opens its inputs, checks everything it can before any Dask task runs (options,
inputs, every output path), runs the lazy computation of a domain package
(:mod:`geoembed.classify`, :mod:`geoembed.cluster`, :mod:`geoembed.infer`,
:mod:`geoembed.similar`, :mod:`geoembed.change`, :mod:`geoembed.regress`,
:mod:`geoembed.train`) and writes its outputs through one output set
(:mod:`geoembed.jobs._outputs` over :class:`geoembed.export.outputs.OutputSet`): staged,
committed together, only replacing what geoembed wrote. Each job takes a frozen
parameters dataclass and returns a JSON-ready summary; the CLI is a thin layer of options
over these functions.

* :func:`geoembed.jobs.classify.run_classify` (``ClassifyParams``, ``ClassifyOutputs``)
* :func:`geoembed.jobs.cluster.run_cluster` (``ClusterParams``, ``ClusterOutputs``)
* :func:`geoembed.jobs.infer.run_infer` (``InferParams``, ``InferOutputs``)
* :func:`geoembed.jobs.similar.run_similar`, :func:`geoembed.jobs.change.run_change`,
  :func:`geoembed.jobs.regress.run_regress` (``*Params``, ``*Outputs``)
* :func:`geoembed.jobs.train.train_cnn` (also :func:`geoembed.train.train_cnn`)
* :func:`geoembed.jobs.demo.run_demo`
* :mod:`geoembed.jobs.model_io`: fitted models on disk

Submodules are imported on use, so ``import geoembed.jobs`` stays cheap.
"""

"""The campaign domain: statuses and their transitions (``status``), campaign definitions
(``campaign``, stored by ``definitions``), status changes and their rules (``changes``,
applied by ``store``), job reads (``queries``), tile registration (``registration``),
runner workers (``workers``), figures (``summary``, kept by every write: ``figures``). No
web framework: the store's errors only say which HTTP status they mean (``errors``)."""

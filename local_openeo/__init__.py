"""A local openEO back-end for demos and tests.

openeo-driver's Flask layer speaks the openEO API (basic auth, signed result URLs);
batch jobs are ours: state on disk per job, a limit on jobs running at once, each job a
subprocess that evaluates its process graph with openeo-processes-dask, reading from
the tilekeeper catalogue and writing COGs. It runs in its own virtualenv
(``.venv-openeo``, see ``scripts/bootstrap.sh``): openeo-driver pins an old pystac and
openeo-pg-parser-networkx an old geojson-pydantic, neither compatible with the
catalogue's stack, and the two only ever talk over HTTP.
"""

"""The vector service (`strata.vector.v1.VectorService`): named indexes of vectors with metadata.

config.py settings; model.py plain data; filters.py the filter language; core.py checks
every request the same way for every engine; backends/ (base.py interface, faiss*.py the
default in-process engine with its log and snapshots, milvus*.py the scale-out engine);
servicer.py protobuf <-> core; server.py/__main__.py wiring.
"""

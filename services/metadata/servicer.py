"""gRPC adapter: strata.metadata.v1.MetadataService over MetadataCore. Translation only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.metadata.core import MetadataCore
from services.metadata.wire import batch_response, database_to_proto, fill_result, statement_from_proto
from services.runtime.errors import InvalidArgument, ResourceExhausted
from strata.metadata.v1 import metadata_pb2 as pb
from strata.metadata.v1 import metadata_pb2_grpc

EXPORT_CHUNK_BYTES = 64 * 1024


class MetadataServicer(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(self, core: MetadataCore, max_import_bytes: int) -> None:
        self.core = core
        self.max_import_bytes = max_import_bytes

    async def CreateDatabase(
        self, request: pb.CreateDatabaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDatabaseResponse:
        info = await self.core.create_database(request.name)
        return pb.CreateDatabaseResponse(database=database_to_proto(info))

    async def ListDatabases(
        self, request: pb.ListDatabasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatabasesResponse:
        page, token = await self.core.list_databases(request.page_size, request.page_token)
        return pb.ListDatabasesResponse(databases=[database_to_proto(d) for d in page], next_page_token=token)

    async def DeleteDatabase(
        self, request: pb.DeleteDatabaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDatabaseResponse:
        await self.core.delete_database(request.name)
        return pb.DeleteDatabaseResponse()

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext) -> pb.QueryResponse:
        statement = statement_from_proto(request)
        result = await self.core.query(
            request.database, statement, read_only=request.read_only, caller_seconds=context.time_remaining()
        )
        response = pb.QueryResponse()
        fill_result(response.result, result, as_records=request.as_records)
        return response

    async def Batch(self, request: pb.BatchRequest, context: grpc.aio.ServicerContext) -> pb.BatchResponse:
        statements = list(map(statement_from_proto, request.statements))
        results = await self.core.batch(request.database, statements, caller_seconds=context.time_remaining())
        return batch_response(results, as_records=request.as_records)

    async def Export(
        self, request: pb.ExportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportResponse]:
        async for text in self.core.export(request.database, schema_only=request.schema_only):
            data = text.encode()
            for start in range(0, len(data), EXPORT_CHUNK_BYTES):
                yield pb.ExportResponse(data=data[start : start + EXPORT_CHUNK_BYTES])

    async def Import(
        self, request_iterator: AsyncIterator[pb.ImportRequest], context: grpc.aio.ServicerContext
    ) -> pb.ImportResponse:
        database: str | None = None
        pieces: list[bytes] = []
        size = 0
        async for request in request_iterator:
            if database is None:
                database = request.database
            size += len(request.data)
            if size > self.max_import_bytes:
                raise ResourceExhausted(
                    f"the dump is larger than {self.max_import_bytes} bytes", reason="IMPORT_TOO_LARGE"
                )
            pieces.append(request.data)
        if not database:
            raise InvalidArgument("the first ImportRequest must name the database", reason="MISSING_DATABASE")
        try:
            sql = b"".join(pieces).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"the dump is not UTF-8: {exc}", reason="DUMP_NOT_UTF8") from exc
        summary = await self.core.import_dump(database, sql)
        return pb.ImportResponse(statements_executed=summary.statements_executed, rows_written=summary.rows_written)

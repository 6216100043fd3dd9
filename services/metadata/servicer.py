"""gRPC adapter: strata.metadata.v1.MetadataService over MetadataCore. Translation only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.metadata.core import MetadataCore
from services.metadata.wire import (
    batch_response,
    batch_statement_from_proto,
    database_to_proto,
    fill_result,
    statement_from_proto,
)
from strata.metadata.v1 import metadata_pb2 as pb
from strata.metadata.v1 import metadata_pb2_grpc

EXPORT_CHUNK_BYTES = 64 * 1024


class MetadataServicer(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(self, core: MetadataCore) -> None:
        self.core = core

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
        statements = [batch_statement_from_proto(s, i) for i, s in enumerate(request.statements)]
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
        first = await anext(aiter(request_iterator), None)

        async def pieces() -> AsyncIterator[bytes]:
            if first is not None:
                yield first.data
            async for request in request_iterator:
                yield request.data

        summary = await self.core.import_dump(first.database if first is not None else "", pieces())
        return pb.ImportResponse(statements_executed=summary.statements_executed, rows_written=summary.rows_written)

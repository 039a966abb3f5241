//! Arrow Flight SQL (`tads serve --flight ADDR`): the session the HTTP API reads, every table and
//! every TADS function, for any Flight SQL client (ADBC, JDBC, DBeaver, `pyarrow.flight`).
//!
//! Built on arrow-flight's own `FlightSqlService`, which carries the protocol: a query is planned
//! when its `FlightInfo` is asked for (so a wrong query fails there, with DataFusion's message),
//! its ticket is the SQL itself, and `DoGet` plans it again and streams the batches as they are
//! computed. Prepared statements are the same without parameters (their handle is the SQL). The
//! catalog calls (catalogs, schemas, tables with their Arrow schemas, table types, SQL info) read
//! DataFusion's catalog, so `adbc_get_objects` and a SQL client's tree see what `SHOW TABLES` does.
//!
//! Read-only: statements are planned with DDL, DML and `SET` refused, so no client can create,
//! drop or change anything. With a token (`--token`), every call needs `authorization: Bearer
//! <token>`: the data is the point of this endpoint, so there is no open route as on HTTP.

use std::pin::Pin;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

/// The Flight SQL service over one DataFusion session.
#[derive(Clone)]
pub(crate) struct FlightSql {
    ctx: SessionContext,
    token: Option<String>,
    info: std::sync::Arc<SqlInfoData>,
}

type DoGetStream = <FlightSql as FlightService>::DoGetStream;

impl FlightSql {
    /// The service over `ctx`; `token`, when set, is asked of every call.
    pub(crate) fn new(ctx: SessionContext, token: Option<String>) -> anyhow::Result<Self> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "TADS");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        let info = info
            .build()
            .map_err(|e| anyhow::anyhow!("flight sql info: {e}"))?;
        Ok(Self {
            ctx,
            token,
            info: std::sync::Arc::new(info),
        })
    }

    /// The tonic service to serve.
    pub(crate) fn service(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
    }

    /// Refuses a call without the token, when there is one.
    #[allow(clippy::result_large_err)] // tonic's Status is what every method returns
    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if super::same_secret(g, token) => Ok(()),
            _ => Err(Status::unauthenticated(
                "this server needs `authorization: Bearer <token>` with its token",
            )),
        }
    }

    /// `sql` planned read-only.
    async fn plan(&self, sql: &str) -> Result<DataFrame, Status> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let planned = self.ctx.sql_with_options(sql, options).await;
        metrics::counter!("tads_flight_queries_total", "planned" => if planned.is_ok() { "ok" } else { "error" })
            .increment(1);
        planned.map_err(|e| match e {
            DataFusionError::Plan(m) if m.contains("not supported") => {
                Status::permission_denied(format!("{m} (this Flight SQL endpoint is read-only)"))
            }
            e => Status::invalid_argument(one_line(&e)),
        })
    }

    /// The `FlightInfo` of `sql`: its schema, and one endpoint whose ticket is `ticket`.
    async fn info_for(
        &self,
        sql: &str,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = self.plan(sql).await?;
        let schema = as_sent(df.schema().as_arrow());
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("the result's schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// Plans `sql` again and streams its batches.
    async fn run(&self, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let df = self.plan(sql).await?;
        let schema: SchemaRef = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df
            .execute_stream()
            .await
            .map_err(|e| Status::internal(one_line(&e)))?
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        Ok(encode(schema, batches))
    }

    /// The Arrow schemas of every table, by catalog and schema (for `CommandGetTables`).
    async fn tables(&self) -> Vec<(String, String, String, String, SchemaRef)> {
        let mut out = Vec::new();
        for catalog_name in self.ctx.catalog_names() {
            let Some(catalog) = self.ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    if let Ok(Some(table)) = schema.table(&table_name).await {
                        let kind = match table.table_type() {
                            datafusion::datasource::TableType::View => "VIEW",
                            datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
                            datafusion::datasource::TableType::Base => "TABLE",
                        };
                        out.push((
                            catalog_name.clone(),
                            schema_name.clone(),
                            table_name,
                            kind.to_string(),
                            table.schema(),
                        ));
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        out
    }
}

/// `schema` as the batches are sent: the encoder sends dictionary columns (the partition
/// columns, for one) as their values, so the schema announced must say so too.
fn as_sent(schema: &Schema) -> Schema {
    use datafusion::arrow::datatypes::{DataType, Field};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, values) => f.as_ref().clone().with_data_type(*values.clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// A DataFusion error on one line (a Flight client shows the status message as it is).
fn one_line(e: &DataFusionError) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `batches` as a Flight data stream with `schema` first (also when there are no rows).
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<DoGetStream> {
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(flight))
}

/// One built batch (a catalog answer) as a Flight data stream.
fn encode_one(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> Response<DoGetStream> {
    encode(schema, stream::once(async move { batch }))
}

/// The `FlightInfo` of a catalog command: `schema`, and the command itself as the ticket.
#[allow(clippy::result_large_err)]
fn catalog_info(
    schema: &Schema,
    command: impl ProstMessageExt,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("a catalog schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The SQL a ticket or handle carries.
#[allow(clippy::result_large_err)]
fn sql_of(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("the statement handle is not a TADS one (not UTF-8)"))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // Nothing to exchange: the bearer token is the credential, checked on every call.
        self.check(request.metadata())?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(answer)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(request.metadata())?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into_bytes().into(),
        };
        self.info_for(
            &query.query,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(request.metadata())?;
        self.run(sql_of(&ticket.statement_handle)?).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.check(request.metadata())?;
        let df = self.plan(&query.query).await?;
        let options = IpcWriteOptions::default();
        let IpcMessage(dataset_schema) =
            SchemaAsIpc::new(&as_sent(df.schema().as_arrow()), &options)
                .try_into()
                .map_err(|e| Status::internal(format!("the result's schema: {e}")))?;
        let IpcMessage(parameter_schema) = SchemaAsIpc::new(&Schema::empty(), &options)
            .try_into()
            .map_err(|e| Status::internal(format!("the parameters' schema: {e}")))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // The handle is the SQL: nothing is held to release.
        self.check(request.metadata())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(request.metadata())?;
        let sql = sql_of(&command.prepared_statement_handle)?.to_string();
        self.info_for(&sql, command.as_any().encode_to_vec(), request.into_inner())
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(request.metadata())?;
        self.run(sql_of(&command.prepared_statement_handle)?).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(request.metadata())?;
        let schema = query.into_builder().schema();
        catalog_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(request.metadata())?;
        let mut builder = query.into_builder();
        let mut names = self.ctx.catalog_names();
        names.sort();
        for name in names {
            builder.append(name);
        }
        Ok(encode_one(builder.schema(), builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        catalog_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(request.metadata())?;
        let mut builder = query.into_builder();
        for catalog_name in self.ctx.catalog_names() {
            if let Some(catalog) = self.ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        Ok(encode_one(builder.schema(), builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        catalog_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(request.metadata())?;
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, arrow_schema) in self.tables().await {
            builder
                .append(catalog, schema, table, kind, &arrow_schema)
                .map_err(|e| Status::internal(format!("listing the tables: {e}")))?;
        }
        Ok(encode_one(builder.schema(), builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(request.metadata())?;
        catalog_info(&table_types_batch().schema(), query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(request.metadata())?;
        let batch = table_types_batch();
        Ok(encode_one(batch.schema(), Ok(batch)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(request.metadata())?;
        let schema = query.clone().into_builder(&self.info).schema();
        catalog_info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(request.metadata())?;
        let builder = query.into_builder(&self.info);
        Ok(encode_one(builder.schema(), builder.build()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The table types DataFusion has, as `CommandGetTableTypes` answers them.
fn table_types_batch() -> RecordBatch {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field};
    let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
    let types = StringArray::from(vec!["LOCAL TEMPORARY", "TABLE", "VIEW"]);
    RecordBatch::try_new(
        std::sync::Arc::new(schema),
        vec![std::sync::Arc::new(types)],
    )
    .expect("one non-null string column matches its schema")
}

/// Serves Flight SQL on `listener` until `stop` turns true.
pub(crate) async fn serve(
    service: FlightSql,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let incoming = tokio_stream_of(listener);
    tonic::transport::Server::builder()
        .add_service(service.service())
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| anyhow::anyhow!("flight sql: {e}"))
}

/// The connections `listener` accepts, as the stream tonic serves.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| s);
        Some((accepted, listener))
    })
    .boxed()
}

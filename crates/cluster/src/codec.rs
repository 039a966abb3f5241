//! Plans that carry their models: codecs that wrap Ballista's own and serialize a TADS scalar
//! function as its name plus the models it scores with, by name and fingerprint, the location
//! they were loaded from, and its fusion settings.
//!
//! A process that decodes such a function (the scheduler a client's plan, an executor a task)
//! loads those models by name from the location (or from its own `--models`, which takes
//! precedence) and checks every fingerprint, so a task never scores with another model than
//! the client's, also after a model was retrained under the same name. Models that exist only
//! in the client's process (a training's temporary fits) travel whole. Models are loaded once
//! per distinct set and kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::exec_err;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    ColumnarValue, Extension, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};
use tads_model::Fusion;
use tads_sql::ModelRegistry;
use tads_sql::registry::Entry;

/// Marks a TADS function's payload (then JSON).
const MAGIC: &[u8] = b"TADS-UDF-1\n";

/// A TADS scalar function's models, as shipped with a plan.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// The models and groups loaded from a location, by name, fingerprint and location.
    models: Vec<Entry>,
    /// The models made in the client's process (a training's temporary fits), whole.
    inline: Vec<String>,
    /// The fusion settings, for the functions that fuse.
    fusion: Option<Fusion>,
}

/// Marks a function whose models could not be loaded (then the reason).
const UNUSABLE: &[u8] = b"TADS-UDF-UNUSABLE\n";

/// Marks a function that travels whole through a [`Carrier`] (then the carrier's name, a
/// newline, and its bytes).
const CARRIED: &[u8] = b"TADS-UDF-CARRIED-1\n";

/// How a scalar function made in a client's process from data, not models (the drift
/// baseline's shifts of a score run), travels whole with the plan: written by `encode` (`None`
/// for a function that is not its own) and rebuilt by `decode` in every process that reads the
/// plan. Register it with [`carry`] in the client and in the cluster's processes.
#[derive(Debug, Clone, Copy)]
pub struct Carrier {
    /// Names the carrier in the plan.
    pub name: &'static str,
    /// The function's bytes, or `None` when the function is not this carrier's.
    pub encode: fn(&ScalarUDF) -> Option<Result<Vec<u8>>>,
    /// The function again, from its bytes.
    pub decode: fn(&[u8]) -> Result<ScalarUDF>,
}

static CARRIERS: Mutex<Vec<Carrier>> = Mutex::new(Vec::new());

/// Registers `carrier` in this process (once per name).
pub fn carry(carrier: Carrier) {
    let mut all = CARRIERS.lock().unwrap_or_else(|p| p.into_inner());
    if !all.iter().any(|c| c.name == carrier.name) {
        all.push(carrier);
    }
}

fn carriers() -> Vec<Carrier> {
    CARRIERS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What identifies a loaded set: the entries and the inline models' fingerprints.
type Key = (Vec<Entry>, Vec<String>);

/// Loads the models of payloads, once per distinct set.
#[derive(Debug, Default)]
pub struct Models {
    /// A process's own models location (`--models`), searched instead of the client's.
    location: Option<String>,
    loaded: Mutex<HashMap<Key, ModelRegistry>>,
}

impl Models {
    /// Loads from `location` when set, else from where each client loaded its models.
    pub fn new(location: Option<String>) -> Self {
        Self {
            location,
            loaded: Mutex::default(),
        }
    }

    /// A registry holding exactly the payload's models: those of a location loaded from it
    /// (or from this process's own location) and checked by fingerprint, the inline ones as
    /// they came.
    fn registry(&self, payload: Payload) -> Result<ModelRegistry> {
        let mut models = payload.models;
        if let Some(own) = &self.location {
            for m in &mut models {
                m.location.clone_from(own);
            }
        }
        let inline: Vec<tads_model::ModelArtifact> = payload
            .inline
            .iter()
            .map(|json| tads_model::ModelArtifact::from_json(json.as_bytes()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| DataFusionError::Plan(format!("a model shipped with the plan: {e}")))?;
        let key = (
            models.clone(),
            inline.iter().map(|m| m.fingerprint.clone()).collect(),
        );
        if let Some(r) = self.loaded.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(r);
        }
        let registry = load_blocking(&models)?;
        for m in inline {
            registry.insert(m).map_err(|e| {
                DataFusionError::Plan(format!("a model shipped with the plan: {e}"))
            })?;
        }
        if let Ok(mut m) = self.loaded.lock() {
            if m.len() >= 64 {
                m.clear();
            }
            m.insert(key, registry.clone());
        }
        Ok(registry)
    }
}

/// Loads `models` from their locations on a thread of its own (decoding is synchronous and
/// may run inside an async runtime), checking every fingerprint.
fn load_blocking(models: &[Entry]) -> Result<ModelRegistry> {
    if models.is_empty() {
        return Ok(ModelRegistry::new());
    }
    let run = || -> std::result::Result<ModelRegistry, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let registry = ModelRegistry::new();
            for m in models {
                let loc = tads_store::Location::parse(&m.location).map_err(|e| e.to_string())?;
                let found = registry.load_model(&loc, &m.name).await.map_err(|e| {
                    format!(
                        "model `{}` is not usable on this cluster process (searched {loc}): {e}",
                        m.name
                    )
                })?;
                let fingerprint = match found {
                    tads_sql::registry::Loaded::Single(s) => s.artifact.fingerprint.clone(),
                    tads_sql::registry::Loaded::Group(g) => g.fingerprint.clone(),
                };
                if fingerprint != m.fingerprint {
                    return Err(format!(
                        "model `{}` at {loc} has fingerprint {fingerprint} but the client scores with {}: every cluster process must see the client's models (retrained since? give them the same --models)",
                        m.name, m.fingerprint
                    ));
                }
            }
            Ok(registry)
        })
    };
    std::thread::scope(|s| s.spawn(run).join())
        .map_err(|_| DataFusionError::Execution("loading models panicked".into()))?
        .map_err(DataFusionError::Plan)
}

/// The payload of a TADS scalar function; nothing for any other function (it is then found by
/// name in the receiving process's registry).
fn encode_udf(node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
    if let Some(u) = node.inner().downcast_ref::<Unusable>() {
        buf.extend_from_slice(UNUSABLE);
        buf.extend_from_slice(u.message.as_bytes());
        return Ok(());
    }
    for carrier in carriers() {
        if let Some(bytes) = (carrier.encode)(node) {
            buf.extend_from_slice(CARRIED);
            buf.extend_from_slice(carrier.name.as_bytes());
            buf.push(b'\n');
            buf.extend_from_slice(&bytes?);
            return Ok(());
        }
    }
    let Some((registry, fusion)) = tads_sql::functions::model_binding(node) else {
        return Ok(());
    };
    let payload = Payload {
        models: registry.entries(),
        inline: registry
            .unsaved()
            .iter()
            .map(|m| String::from_utf8_lossy(&m.artifact.to_json()).into_owned())
            .collect(),
        fusion,
    };
    buf.extend_from_slice(MAGIC);
    serde_json::to_writer(buf, &payload).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The TADS scalar function `name` with the models of its payload; `None` for a buffer that is
/// not a TADS payload.
///
/// A process that cannot load the models gets a function that fails with the reason when it
/// runs (and travels on as such): Ballista reports a task's execution error to the client, but
/// only "task could not be prepared" for a plan an executor could not decode.
fn decode_udf(models: &Models, name: &str, buf: &[u8]) -> Option<Result<Arc<ScalarUDF>>> {
    if let Some(message) = buf.strip_prefix(UNUSABLE) {
        let message = String::from_utf8_lossy(message).into_owned();
        return Some(Ok(Arc::new(ScalarUDF::new_from_impl(Unusable::new(
            name, message,
        )))));
    }
    if let Some(carried) = buf.strip_prefix(CARRIED) {
        return Some(Ok(Arc::new(decode_carried(name, carried))));
    }
    let json = buf.strip_prefix(MAGIC)?;
    let udf = (|| {
        let payload: Payload =
            serde_json::from_slice(json).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let fusion = payload.fusion.unwrap_or_default();
        let registry = models.registry(payload)?;
        tads_sql::functions::scalar_udf_named(name, &registry, fusion)
            .map(Arc::new)
            .ok_or_else(|| {
                DataFusionError::Plan(format!("`{name}` is not a function of this TADS version"))
            })
    })();
    Some(udf.or_else(|e| {
        let message = e.strip_backtrace();
        let message = message
            .strip_prefix("Error during planning: ")
            .unwrap_or(&message);
        Ok(Arc::new(ScalarUDF::new_from_impl(Unusable::new(
            name,
            message.to_string(),
        ))))
    }))
}

/// The function a [`Carrier`] wrote, or one that fails with the reason it could not be rebuilt.
fn decode_carried(name: &str, carried: &[u8]) -> ScalarUDF {
    let split = carried
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(carried.len());
    let carrier = String::from_utf8_lossy(&carried[..split]).into_owned();
    let bytes = carried.get(split + 1..).unwrap_or_default();
    let found = carriers().into_iter().find(|c| c.name == carrier);
    let rebuilt = match found {
        Some(c) => (c.decode)(bytes).map_err(|e| e.strip_backtrace()),
        None => Err(format!(
            "`{name}` travels as `{carrier}`, which this process cannot rebuild: run the cluster's processes with `tads cluster scheduler` and `tads cluster executor` of this TADS version"
        )),
    };
    rebuilt.unwrap_or_else(|message| ScalarUDF::new_from_impl(Unusable::new(name, message)))
}

/// Marks an in-memory table (then an Arrow IPC stream of its rows).
const MEMORY: &[u8] = b"TADS-MEMTABLE-1\n";

/// An in-memory table of the client (the small tables TADS joins to the data: a training's
/// medians, a group's keys, the `models` table) as Arrow IPC, so its plan can run on the
/// cluster; its partitions become one.
fn encode_memory(table: &MemTable, buf: &mut Vec<u8>) -> Result<()> {
    let schema = table.schema();
    buf.extend_from_slice(MEMORY);
    let mut writer = StreamWriter::try_new(&mut *buf, &schema)?;
    for partition in &table.batches {
        let batches = partition.try_read().map_err(|_| {
            DataFusionError::Execution("an in-memory table is being written to".into())
        })?;
        for b in batches.iter() {
            writer.write(b)?;
        }
    }
    writer.finish()?;
    Ok(())
}

/// The table [`encode_memory`] wrote.
fn decode_memory(ipc: &[u8], schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let reader = StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
}

/// Ballista's logical codec, with TADS functions carrying their models (aggregate and window
/// functions go by name, as in Ballista's).
#[derive(Debug)]
pub struct TadsLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
    models: Arc<Models>,
}

impl TadsLogicalCodec {
    /// The codec, loading models with `models`.
    pub fn new(models: Arc<Models>) -> Self {
        Self {
            inner: BallistaLogicalExtensionCodec::default(),
            models,
        }
    }
}

impl LogicalExtensionCodec for TadsLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.strip_prefix(MEMORY) {
            Some(ipc) => decode_memory(ipc, schema),
            None => self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match node.downcast_ref::<MemTable>() {
            Some(table) => encode_memory(table, buf),
            None => self.inner.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(&self.models, name, buf).unwrap_or_else(|| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(node, buf)
    }
}

/// A TADS function whose models this process could not load: it fails with the reason when
/// it runs.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Unusable {
    name: String,
    message: String,
    signature: Signature,
    returns: DataType,
}

impl Unusable {
    fn new(name: &str, message: String) -> Self {
        Self {
            name: name.to_string(),
            message,
            signature: Signature::variadic_any(Volatility::Immutable),
            returns: tads_sql::functions::return_type_of(name).unwrap_or(DataType::Float64),
        }
    }
}

impl ScalarUDFImpl for Unusable {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{}", self.message)
    }
}

/// Ballista's physical codec, with TADS functions carrying their models.
#[derive(Debug)]
pub struct TadsPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
    models: Arc<Models>,
}

impl TadsPhysicalCodec {
    /// The codec, loading models with `models`.
    pub fn new(models: Arc<Models>) -> Self {
        Self {
            inner: BallistaPhysicalExtensionCodec::default(),
            models,
        }
    }
}

impl PhysicalExtensionCodec for TadsPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(&self.models, name, buf).unwrap_or_else(|| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn an_in_memory_table_travels_as_arrow_ipc() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = |k: &str, v: i64| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(vec![k])),
                    Arc::new(Int64Array::from(vec![v])),
                ],
            )
            .unwrap()
        };
        let table = MemTable::try_new(
            Arc::clone(&schema),
            vec![vec![batch("a", 1)], vec![batch("b", 2)]],
        )
        .unwrap();
        let codec = TadsLogicalCodec::new(Arc::new(Models::default()));
        let mut buf = vec![];
        let table_ref = TableReference::bare("t");
        codec
            .try_encode_table_provider(&table_ref, Arc::new(table), &mut buf)
            .unwrap();
        let ctx = TaskContext::default();
        let back = codec
            .try_decode_table_provider(&buf, &table_ref, Arc::clone(&schema), &ctx)
            .unwrap();
        let back = back.downcast_ref::<MemTable>().unwrap();
        let rows: Vec<RecordBatch> = back
            .batches
            .iter()
            .flat_map(|p| p.try_read().unwrap().clone())
            .collect();
        assert_eq!(rows, vec![batch("a", 1), batch("b", 2)]);
    }

    #[test]
    fn a_model_made_in_the_clients_process_travels_whole_and_a_missing_one_fails_when_run() {
        let registry = ModelRegistry::new();
        let udf = tads_sql::functions::scalar_udf_named("pca_score", &registry, Fusion::default())
            .unwrap();
        let mut buf = vec![];
        encode_udf(&udf, &mut buf).unwrap();
        assert!(buf.starts_with(MAGIC));
        let models = Models::default();
        let back = decode_udf(&models, "pca_score", &buf).unwrap().unwrap();
        assert!(tads_sql::functions::model_binding(&back).is_some());
        // A model of a location that is not there: a function that fails with why, and
        // travels on as such.
        let payload = Payload {
            models: vec![Entry {
                name: "gone".into(),
                fingerprint: "sha256:0".into(),
                group: false,
                location: "/nonexistent/tads-models".into(),
            }],
            inline: vec![],
            fusion: None,
        };
        let mut buf = MAGIC.to_vec();
        serde_json::to_writer(&mut buf, &payload).unwrap();
        let unusable = decode_udf(&models, "pca_score", &buf).unwrap().unwrap();
        let u = unusable.inner().downcast_ref::<Unusable>().unwrap();
        assert!(
            u.message.contains("model `gone`") && u.message.contains("/nonexistent/tads-models"),
            "{}",
            u.message
        );
        let mut again = vec![];
        encode_udf(&unusable, &mut again).unwrap();
        let back = decode_udf(&models, "pca_score", &again).unwrap().unwrap();
        assert_eq!(
            back.inner().downcast_ref::<Unusable>().unwrap().message,
            u.message
        );
        // Not TADS's: left to the receiver's registry.
        assert!(decode_udf(&models, "abs", b"").is_none());
    }

    /// A registered carrier's function is written by it and rebuilt by it; one whose carrier
    /// this process does not know fails when it runs, naming the carrier.
    #[test]
    fn carried_functions_travel_whole_and_an_unknown_carrier_fails_when_run() {
        /// A function made from data: its text.
        #[derive(Debug, PartialEq, Eq, Hash)]
        struct Made(String, Signature);
        impl ScalarUDFImpl for Made {
            fn name(&self) -> &str {
                "made_here"
            }
            fn signature(&self) -> &Signature {
                &self.1
            }
            fn return_type(&self, _: &[DataType]) -> Result<DataType> {
                Ok(DataType::Utf8)
            }
            fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
                exec_err!("not run here")
            }
        }
        fn made(text: String) -> ScalarUDF {
            ScalarUDF::new_from_impl(Made(text, Signature::nullary(Volatility::Immutable)))
        }
        fn encode(udf: &ScalarUDF) -> Option<Result<Vec<u8>>> {
            let m = udf.inner().downcast_ref::<Made>()?;
            Some(Ok(m.0.clone().into_bytes()))
        }
        fn decode(bytes: &[u8]) -> Result<ScalarUDF> {
            Ok(made(String::from_utf8_lossy(bytes).into_owned()))
        }
        carry(Carrier {
            name: "test-carrier",
            encode,
            decode,
        });
        let mut buf = vec![];
        encode_udf(&made("payload".into()), &mut buf).unwrap();
        assert!(buf.starts_with(b"TADS-UDF-CARRIED-1\ntest-carrier\npayload"));
        let models = Models::default();
        let back = decode_udf(&models, "made_here", &buf).unwrap().unwrap();
        assert_eq!(back.inner().downcast_ref::<Made>().unwrap().0, "payload");
        let unknown = decode_udf(&models, "shift", b"TADS-UDF-CARRIED-1\nelsewhere\n{}")
            .unwrap()
            .unwrap();
        let message = &unknown.inner().downcast_ref::<Unusable>().unwrap().message;
        assert!(
            message.contains("`elsewhere`") && message.contains("tads cluster executor"),
            "{message}"
        );
    }
}

//! The models that connected workers serve, as their `Describe` reported.
//! The event loop updates it when workers come and go; `Generate` and
//! `ListModels` read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokenizers::Tokenizer;
use wick_proto::v1 as pb;

use crate::error::RequestError;

/// One model and what the scheduler needs to prepare its requests.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub id: Arc<str>,
    pub family: String,
    pub tokenizer: Arc<Tokenizer>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    /// Context window in tokens.
    pub context_length: usize,
    pub chat_template: Option<String>,
    pub lora_adapters: Vec<String>,
    /// KV-cache size of each connected worker that serves it, in tokens.
    pub worker_kv_tokens: BTreeMap<usize, usize>,
    /// Tokens per KV block on its workers (the smallest, when they differ).
    pub block_size: usize,
}

impl ModelEntry {
    /// The maximum tokens one sequence can use, on the largest worker.
    pub fn max_kv_tokens(&self) -> usize {
        self.worker_kv_tokens.values().copied().max().unwrap_or(0)
    }
}

/// The model name Workers AI clients send for phi-2.
pub const WORKERS_AI_PHI2: &str = "@cf/microsoft/phi-2";

#[derive(Debug, Default)]
pub struct Catalog {
    models: BTreeMap<Arc<str>, Arc<ModelEntry>>,
    aliases: BTreeMap<String, String>,
}

impl Catalog {
    pub fn new(aliases: BTreeMap<String, String>) -> Self {
        Catalog {
            models: BTreeMap::new(),
            aliases,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Records a connected worker and returns its model id.
    pub fn add_worker(
        &mut self,
        worker: usize,
        describe: &pb::DescribeResponse,
        tokenizer: Arc<Tokenizer>,
    ) -> Arc<str> {
        let id: Arc<str> = Arc::from(describe.model_id.as_str());
        let block_size = describe.kv_block_size.max(1) as usize;
        let kv_tokens = describe.kv_blocks_total as usize * block_size;
        let previous = self.models.get(&id);
        let mut worker_kv_tokens = previous
            .map(|m| m.worker_kv_tokens.clone())
            .unwrap_or_default();
        worker_kv_tokens.insert(worker, kv_tokens);
        let block_size = previous.map_or(block_size, |m| m.block_size.min(block_size));
        let chat_template = Some(describe.chat_template.clone()).filter(|t| !t.is_empty());
        let entry = ModelEntry {
            id: Arc::clone(&id),
            family: describe.family.clone(),
            tokenizer,
            eos_token_ids: describe.eos_token_ids.clone(),
            bos_token_id: describe.bos_token_id,
            context_length: describe.context_length as usize,
            chat_template,
            lora_adapters: describe.lora_adapters.clone(),
            worker_kv_tokens,
            block_size,
        };
        self.models.insert(Arc::clone(&id), Arc::new(entry));
        id
    }

    pub fn remove_worker(&mut self, worker: usize) {
        let mut emptied = Vec::new();
        for (id, entry) in self.models.iter_mut() {
            if entry.worker_kv_tokens.contains_key(&worker) {
                let mut kv = entry.worker_kv_tokens.clone();
                kv.remove(&worker);
                if kv.is_empty() {
                    emptied.push(Arc::clone(id));
                    continue;
                }
                let mut updated = ModelEntry::clone(entry);
                updated.worker_kv_tokens = kv;
                *entry = Arc::new(updated);
            }
        }
        for id in emptied {
            self.models.remove(&id);
        }
    }

    /// Finds a model by id or alias. An empty name, or an alias mapped to
    /// the empty id, picks the default model: the first by id.
    ///
    /// Errors with [`RequestError::NoWorker`] when no worker is connected
    /// and [`RequestError::UnknownModel`] when none serves `name`.
    pub fn resolve(&self, name: &str) -> Result<Arc<ModelEntry>, RequestError> {
        if self.models.is_empty() {
            return Err(RequestError::NoWorker);
        }
        let id = self.aliases.get(name).map_or(name, String::as_str);
        if id.is_empty() {
            let first = self
                .models
                .values()
                .next()
                .expect("checked non-empty above");
            return Ok(Arc::clone(first));
        }
        self.models
            .get(id)
            .or_else(|| self.models.get(name))
            .or_else(|| self.workers_ai_fallback(name))
            .cloned()
            .ok_or_else(|| RequestError::UnknownModel {
                model: name.to_string(),
            })
    }

    /// Lets the Workers AI name of phi-2 select the first phi-family model
    /// when no alias target of it is served (the demo model, a local
    /// copy under another id), so Workers AI clients work unchanged.
    fn workers_ai_fallback(&self, name: &str) -> Option<&Arc<ModelEntry>> {
        if name != WORKERS_AI_PHI2 {
            return None;
        }
        self.models.values().find(|entry| entry.family == "phi")
    }

    /// Returns every name besides its id that selects `entry`: its
    /// aliases, and the Workers AI name of phi-2 when it falls back to it.
    fn aliases_of(&self, entry: &ModelEntry) -> Vec<String> {
        let mut names: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
        if !self.aliases.contains_key(WORKERS_AI_PHI2) {
            names.push(WORKERS_AI_PHI2);
        }
        names
            .into_iter()
            .filter(|name| *name != &*entry.id)
            .filter(|name| {
                self.resolve(name)
                    .is_ok_and(|found| Arc::ptr_eq(&found.id, &entry.id))
            })
            .map(str::to_string)
            .collect()
    }

    pub fn list(&self) -> pb::ListModelsResponse {
        let models = self
            .models
            .values()
            .map(|entry| pb::ModelInfo {
                id: entry.id.to_string(),
                aliases: self.aliases_of(entry),
                context_length: entry.context_length as u32,
                workers: entry.worker_kv_tokens.len() as u32,
                lora_adapters: entry.lora_adapters.clone(),
                family: entry.family.clone(),
            })
            .collect();
        pb::ListModelsResponse { models }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(model_id: &str) -> pb::DescribeResponse {
        pb::DescribeResponse {
            model_id: model_id.to_string(),
            family: "phi".to_string(),
            kv_block_size: 16,
            kv_blocks_total: 10,
            context_length: 2048,
            ..Default::default()
        }
    }

    fn catalog() -> Catalog {
        let aliases = [("@cf/microsoft/phi-2", ""), ("phi", "b/model")]
            .into_iter()
            .map(|(alias, id)| (alias.to_string(), id.to_string()))
            .collect();
        let mut catalog = Catalog::new(aliases);
        // The catalog only stores the tokenizer, so an empty one will do.
        let tokenizer = Arc::new(Tokenizer::new(tokenizers::models::bpe::BPE::default()));
        catalog.add_worker(0, &describe("b/model"), Arc::clone(&tokenizer));
        catalog.add_worker(1, &describe("a/model"), tokenizer);
        catalog
    }

    #[test]
    fn resolve_by_id_alias_and_default() {
        let catalog = catalog();
        assert_eq!(&*catalog.resolve("b/model").unwrap().id, "b/model");
        assert_eq!(&*catalog.resolve("phi").unwrap().id, "b/model");
        assert_eq!(&*catalog.resolve("").unwrap().id, "a/model");
        assert_eq!(
            &*catalog.resolve("@cf/microsoft/phi-2").unwrap().id,
            "a/model"
        );
        let unknown = catalog.resolve("c/model");
        assert!(matches!(unknown, Err(RequestError::UnknownModel { .. })));
    }

    #[test]
    fn workers_ai_name_selects_first_phi_model() {
        let mut catalog = Catalog::new(BTreeMap::from([(
            WORKERS_AI_PHI2.to_string(),
            "microsoft/phi-2".to_string(),
        )]));
        let tokenizer = Arc::new(Tokenizer::new(tokenizers::models::bpe::BPE::default()));
        let mut llama = describe("a/llama");
        llama.family = "llama".to_string();
        catalog.add_worker(0, &llama, Arc::clone(&tokenizer));
        let unknown = catalog.resolve(WORKERS_AI_PHI2);
        assert!(matches!(unknown, Err(RequestError::UnknownModel { .. })));
        catalog.add_worker(1, &describe("wick/demo-phi"), tokenizer);
        assert_eq!(
            &*catalog.resolve(WORKERS_AI_PHI2).unwrap().id,
            "wick/demo-phi"
        );
    }

    #[test]
    fn list_shows_aliases_and_workers() {
        let mut catalog = catalog();
        let listed = catalog.list();
        assert_eq!(listed.models.len(), 2);
        assert_eq!(listed.models[0].id, "a/model");
        assert_eq!(
            listed.models[0].aliases,
            vec!["@cf/microsoft/phi-2".to_string()]
        );
        assert_eq!(listed.models[1].aliases, vec!["phi".to_string()]);
        catalog.remove_worker(1);
        assert_eq!(catalog.list().models.len(), 1);
        catalog.remove_worker(0);
        assert!(matches!(catalog.resolve(""), Err(RequestError::NoWorker)));
    }
}

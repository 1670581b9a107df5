//! An in-memory storage for unit tests of the engine (no disk, no network).

use super::{AlreadyExists, DeleteReport, NotFound, ObjectInfo, ObjectWriter, PutMeta, Storage};
use anyhow::Result;
use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex};

type Objects = Arc<Mutex<BTreeMap<String, (Vec<u8>, chrono::DateTime<chrono::Utc>)>>>;

#[derive(Default, Clone)]
pub struct MemoryStorage {
    name: String,
    objects: Objects,
    /// Every key deleted, in order (tests check deletion order).
    deleted: Arc<Mutex<Vec<String>>>,
}

impl MemoryStorage {
    pub fn new(name: &str) -> MemoryStorage {
        MemoryStorage {
            name: name.into(),
            objects: Arc::default(),
            deleted: Arc::default(),
        }
    }

    #[cfg(test)]
    pub fn deleted_log(&self) -> Vec<String> {
        self.deleted.lock().unwrap().clone()
    }
}

struct MemWriter {
    key: String,
    buf: Vec<u8>,
    objects: Objects,
}

impl Write for MemWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemWriter {
    fn finish(self: Box<Self>) -> Result<ObjectInfo> {
        let size = self.buf.len() as u64;
        let now = chrono::Utc::now();
        self.objects
            .lock()
            .unwrap()
            .insert(self.key.clone(), (self.buf, now));
        Ok(ObjectInfo {
            key: self.key,
            size,
            modified: Some(now),
        })
    }
    fn abort(self: Box<Self>) {}
}

impl Storage for MemoryStorage {
    fn name(&self) -> &str {
        &self.name
    }
    fn location(&self) -> String {
        format!("memory://{}", self.name)
    }
    fn create(&self, key: &str, _meta: &PutMeta) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemWriter {
            key: key.into(),
            buf: Vec::new(),
            objects: self.objects.clone(),
        }))
    }
    fn put_if_absent(&self, key: &str, data: &[u8], _meta: &PutMeta) -> Result<ObjectInfo> {
        let mut o = self.objects.lock().unwrap();
        if o.contains_key(key) {
            return Err(AlreadyExists(key.into()).into());
        }
        let now = chrono::Utc::now();
        o.insert(key.into(), (data.to_vec(), now));
        Ok(ObjectInfo {
            key: key.into(),
            size: data.len() as u64,
            modified: Some(now),
        })
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        match self.objects.lock().unwrap().get(key) {
            Some((d, _)) => Ok(Box::new(Cursor::new(d.clone()))),
            None => Err(NotFound(key.into()).into()),
        }
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|(d, t)| ObjectInfo {
                key: key.into(),
                size: d.len() as u64,
                modified: Some(*t),
            }))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (d, t))| ObjectInfo {
                key: k.clone(),
                size: d.len() as u64,
                modified: Some(*t),
            })
            .collect())
    }
    fn delete(&self, keys: &[String]) -> Result<DeleteReport> {
        let mut o = self.objects.lock().unwrap();
        let mut r = DeleteReport::default();
        for k in keys {
            o.remove(k);
            self.deleted.lock().unwrap().push(k.clone());
            r.deleted.push(k.clone());
        }
        Ok(r)
    }
}

//! PostgreSQL for tests: the cluster `scripts/pg-test.sh` starts
//! (`REINS_TEST_PG_URL`) and fresh databases on it. The PostgreSQL tests
//! fail, never skip, when the variable is unset.

/// The test cluster's URL.
pub fn url() -> String {
    std::env::var("REINS_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "REINS_TEST_PG_URL is not set: run the tests through `bash scripts/test.sh`, which installs and starts \
             PostgreSQL (or source scripts/pg-test.sh)"
        )
    })
}

/// A fresh database on the test cluster; dropped (with its connections) on drop.
pub struct Database {
    admin: String,
    name: String,
    /// The new database's URL.
    pub url: String,
}

impl Database {
    pub async fn create() -> Database {
        let admin = url();
        let name = format!("reins_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("connect to the test cluster");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Database { admin, name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop needs its own runtime: the test's is shutting down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

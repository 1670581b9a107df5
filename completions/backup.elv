
use builtin;
use str;

set edit:completion:arg-completer[backup] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'backup'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'backup'= {
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand run 'Take a backup of a target and store it on every storage of the target'
            cand list 'List backups'
            cand verify 'Read backups back from storage and check them (size, SHA-256, stream, tools)'
            cand restore 'Restore a backup into a database (verified before anything is touched)'
            cand test-restore 'Restore a backup into a scratch cluster, check it, and remove the scratch copy'
            cand status 'Are we backed up? Last good backup per target and storage, its age, last test-restore'
            cand prune 'Remove backups the retention policy no longer keeps (prints the plan and why)'
            cand copy 'Copy backups from one storage to another (off-site copies), verified at the destination'
            cand undelete 'Bring back backups hidden behind delete markers on a versioned S3 storage (ransomware runbook)'
            cand pitr 'Restore a physical base backup and recover to a point in time (PostgreSQL PITR)'
            cand wal-push 'archive_command: store a WAL file in every storage of a target (exit 0 only when durable)'
            cand wal-fetch 'restore_command: fetch a WAL file (exit 0 fetched, 1 not archived, 126 storage or checksum error)'
            cand check 'Check a physical target''s WAL archiving end to end (forces a WAL switch)'
            cand schedule 'Every scheduled job and its next fire times (check a config before deploying it)'
            cand daemon 'Run every schedule in the foreground (for systemd and containers); /metrics, /healthz'
            cand completions 'Print a shell completion script'
            cand man 'Write man pages into a folder'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'backup;run'= {
            cand --tag 'Tag kept in the manifest and as an S3 object tag (e.g. pre-deployment-v1.2.3)'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --json 'Print the result as JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;list'= {
            cand --storage 'Only this storage (default: every storage of each target)'
            cand --tag 'Only backups with this tag'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --all 'Also show incomplete backups (no manifest: interrupted or failed runs)'
            cand --deleted 'Ransomware runbook: list the backups whose manifest a delete marker hides on a versioned S3 storage, whose old versions are still there (restore them with `restore --deleted`, or bring them back with `undelete`)'
            cand --json 'Print a JSON array on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;verify'= {
            cand --storage 'Only this storage (default: every storage of the target)'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --all 'Verify every backup, not only the latest'
            cand --json 'Print the reports as JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;restore'= {
            cand --storage 'Read the backup from this storage (default: local storages first)'
            cand --to-database 'Restore into this database (created when missing) instead of the target''s'
            cand --table 'Restore only this table (`name` or `schema.name`, ClickHouse `db.table`); repeatable. PostgreSQL: custom-format dumps only'
            cand --to-url 'Redis/MongoDB: restore into this server instead of the target''s (`redis://[USER@]HOST:PORT`, `rediss://`, `mongodb://...`, also spelt --to-uri; password from REDISCLI_AUTH / MONGODB_PASSWORD, or the URL, where ps can see it)'
            cand --to-uri 'Redis/MongoDB: restore into this server instead of the target''s (`redis://[USER@]HOST:PORT`, `rediss://`, `mongodb://...`, also spelt --to-uri; password from REDISCLI_AUTH / MONGODB_PASSWORD, or the URL, where ps can see it)'
            cand --ns-include 'MongoDB: restore only the namespaces matching this pattern (`db.coll`, `db.*`; mongorestore --nsInclude); repeatable'
            cand --ns-from 'MongoDB: rename namespaces matching this pattern (`app.users`, `$db$.$coll$`)...'
            cand --ns-to '...to this one (`app.users_restored`, `copy_$db$.$coll$`)'
            cand --db 'Redis: restore only this logical database (repeatable; default: every one)'
            cand --match 'Redis: restore only the keys matching this glob (as KEYS/SCAN MATCH); never flushes'
            cand --jobs 'Parallel pg_restore jobs into a fresh database (default: the target''s restore_jobs, else 2)'
            cand --temp-dir 'Where to download remote backups before restoring (default: $TMPDIR)'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --clean 'Drop the restored objects before recreating them, instead of refusing ones that exist and hold data (PostgreSQL custom format; plain dumps always do; Redis: the same as --flush; MongoDB: mongorestore --drop, also spelt --drop)'
            cand --drop 'Drop the restored objects before recreating them, instead of refusing ones that exist and hold data (PostgreSQL custom format; plain dumps always do; Redis: the same as --flush; MongoDB: mongorestore --drop, also spelt --drop)'
            cand --flush 'Redis: empty the destination (the databases restored) first; `--clean` is an alias'
            cand --by-file 'Redis: stop the target''s own server (`stop_command`), put the backup in place of its data file (and AOF), start it (`start_command`); the old file is kept until it answers'
            cand -y 'Do not ask for confirmation'
            cand --yes 'Do not ask for confirmation'
            cand --dry-run 'Print the plan and change nothing'
            cand --no-check 'Skip comparing restored row counts with the manifest'
            cand --no-analyze 'PostgreSQL: do not ANALYZE after the restore (the first queries then run on empty planner statistics until autovacuum gets round to them)'
            cand --deleted 'Ransomware runbook: restore from the versions a delete marker hides on a versioned S3 storage (with --storage; see `backup list --deleted`)'
            cand --json 'Print the outcome as JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;test-restore'= {
            cand --within 'Only backups finished within this long (e.g. 30d); fails when the chosen one is older'
            cand --report 'Also write the report (JSON) to this file'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --json 'Print the report as JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;status'= {
            cand --max-age 'Oldest acceptable newest backup, per target and storage (exit 7 when older; default: each target''s `max_age`, else 26h)'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --json 'Print JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;prune'= {
            cand --storage 'Only this storage (default: every storage of each target)'
            cand --now 'Evaluate the policy as of this instant (UTC): 2026-12-01T02:00:00Z, 20261201T020000Z or 2026-12-01'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --dry-run 'Print the plan and delete nothing'
            cand --json 'Print the plan (with each removal''s result) as a JSON array on stdout'
            cand --extend-locks 'Also extend the S3 Object Lock of every backup the policy keeps (and the WAL it needs) to a full lock period from now when less than half is left; never shortens'
            cand -y 'Delete without asking (needed when stdin is not a terminal)'
            cand --yes 'Delete without asking (needed when stdin is not a terminal)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;copy'= {
            cand --from 'Storage to read from (default: the target''s first storage)'
            cand --to 'Storage to write to (default: every storage in the target''s `copy_to`)'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --all 'Copy every complete backup the source holds (those already complete at the destination are skipped)'
            cand --dry-run 'Print what would be copied; write nothing'
            cand --json 'Print the result as JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;undelete'= {
            cand --storage 'The versioned S3 storage the backups were deleted from'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --dry-run 'Print what would be brought back; change nothing'
            cand -y 'Do not ask for confirmation'
            cand --yes 'Do not ask for confirmation'
            cand --json 'Print the outcome as JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;pitr'= {
            cand --target-time 'Recover up to this time (UTC unless a zone is given), e.g. 2026-11-24T14:05:00Z'
            cand --target-name 'Recover up to a restore point made with pg_create_restore_point()'
            cand --target-xid 'Recover up to and including this transaction id'
            cand --target-lsn 'Recover up to this WAL location, e.g. 0/3000060'
            cand --data-dir 'New, empty data directory to restore into'
            cand --target-action 'What the server does at the target: promote (default), pause or shutdown'
            cand --timeline 'recovery_target_timeline (default: latest)'
            cand --backup 'Use this base backup (id or unique prefix) instead of the newest that fits'
            cand --port 'Port for the started server (with --start)'
            cand --owner 'OS user that owns the data directory and runs the server (as root; default postgres)'
            cand --timeout 'Give up following recovery after this long (with --start), e.g. 30m'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --target-immediate 'Recover only to the end of the base backup (the earliest consistent point)'
            cand --target-latest 'Recover everything the archive holds, on the newest timeline (data-center loss); with --start, reports the last transaction reached: the recovery point achieved'
            cand --start 'Start the server, follow recovery and confirm it reached the target'
            cand --json 'Print the outcome as JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;wal-push'= {
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --background 'Run as the background worker of `async = true` (started by wal-push itself)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;wal-fetch'= {
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;check'= {
            cand --timeout 'How long to wait for the switched WAL segment to arrive, e.g. 60s'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;schedule'= {
            cand -n 'How many fire times to list per job'
            cand --count 'How many fire times to list per job'
            cand --from 'List fire times after this instant (RFC 3339, default now)'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --json 'Print JSON on stdout'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;daemon'= {
            cand --log-format 'Log lines as `key=value` text or as JSON lines'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;completions'= {
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;man'= {
            cand --out 'Folder to write backup.1 and backup-<command>.1 into'
            cand -c 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand --config 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)'
            cand -q 'Only warnings and errors on stderr'
            cand --quiet 'Only warnings and errors on stderr'
            cand --no-progress 'No progress bars (log lines only)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'backup;help'= {
            cand run 'Take a backup of a target and store it on every storage of the target'
            cand list 'List backups'
            cand verify 'Read backups back from storage and check them (size, SHA-256, stream, tools)'
            cand restore 'Restore a backup into a database (verified before anything is touched)'
            cand test-restore 'Restore a backup into a scratch cluster, check it, and remove the scratch copy'
            cand status 'Are we backed up? Last good backup per target and storage, its age, last test-restore'
            cand prune 'Remove backups the retention policy no longer keeps (prints the plan and why)'
            cand copy 'Copy backups from one storage to another (off-site copies), verified at the destination'
            cand undelete 'Bring back backups hidden behind delete markers on a versioned S3 storage (ransomware runbook)'
            cand pitr 'Restore a physical base backup and recover to a point in time (PostgreSQL PITR)'
            cand wal-push 'archive_command: store a WAL file in every storage of a target (exit 0 only when durable)'
            cand wal-fetch 'restore_command: fetch a WAL file (exit 0 fetched, 1 not archived, 126 storage or checksum error)'
            cand check 'Check a physical target''s WAL archiving end to end (forces a WAL switch)'
            cand schedule 'Every scheduled job and its next fire times (check a config before deploying it)'
            cand daemon 'Run every schedule in the foreground (for systemd and containers); /metrics, /healthz'
            cand completions 'Print a shell completion script'
            cand man 'Write man pages into a folder'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'backup;help;run'= {
        }
        &'backup;help;list'= {
        }
        &'backup;help;verify'= {
        }
        &'backup;help;restore'= {
        }
        &'backup;help;test-restore'= {
        }
        &'backup;help;status'= {
        }
        &'backup;help;prune'= {
        }
        &'backup;help;copy'= {
        }
        &'backup;help;undelete'= {
        }
        &'backup;help;pitr'= {
        }
        &'backup;help;wal-push'= {
        }
        &'backup;help;wal-fetch'= {
        }
        &'backup;help;check'= {
        }
        &'backup;help;schedule'= {
        }
        &'backup;help;daemon'= {
        }
        &'backup;help;completions'= {
        }
        &'backup;help;man'= {
        }
        &'backup;help;help'= {
        }
    ]
    $completions[$command]
}

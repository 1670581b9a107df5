
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'backup' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'backup'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'backup' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Take a backup of a target and store it on every storage of the target')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List backups')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Read backups back from storage and check them (size, SHA-256, stream, tools)')
            [CompletionResult]::new('restore', 'restore', [CompletionResultType]::ParameterValue, 'Restore a backup into a database (verified before anything is touched)')
            [CompletionResult]::new('test-restore', 'test-restore', [CompletionResultType]::ParameterValue, 'Restore a backup into a scratch cluster, check it, and remove the scratch copy')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Are we backed up? Last good backup per target and storage, its age, last test-restore')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Remove backups the retention policy no longer keeps (prints the plan and why)')
            [CompletionResult]::new('copy', 'copy', [CompletionResultType]::ParameterValue, 'Copy backups from one storage to another (off-site copies), verified at the destination')
            [CompletionResult]::new('undelete', 'undelete', [CompletionResultType]::ParameterValue, 'Bring back backups hidden behind delete markers on a versioned S3 storage (ransomware runbook)')
            [CompletionResult]::new('pitr', 'pitr', [CompletionResultType]::ParameterValue, 'Restore a physical base backup and recover to a point in time (PostgreSQL PITR)')
            [CompletionResult]::new('wal-push', 'wal-push', [CompletionResultType]::ParameterValue, 'archive_command: store a WAL file in every storage of a target (exit 0 only when durable)')
            [CompletionResult]::new('wal-fetch', 'wal-fetch', [CompletionResultType]::ParameterValue, 'restore_command: fetch a WAL file (exit 0 fetched, 1 not archived, 126 storage or checksum error)')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Check a physical target''s WAL archiving end to end (forces a WAL switch)')
            [CompletionResult]::new('schedule', 'schedule', [CompletionResultType]::ParameterValue, 'Every scheduled job and its next fire times (check a config before deploying it)')
            [CompletionResult]::new('daemon', 'daemon', [CompletionResultType]::ParameterValue, 'Run every schedule in the foreground (for systemd and containers); /metrics, /healthz')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages into a folder')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'backup;run' {
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'Tag kept in the manifest and as an S3 object tag (e.g. pre-deployment-v1.2.3)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the result as JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;list' {
            [CompletionResult]::new('--storage', '--storage', [CompletionResultType]::ParameterName, 'Only this storage (default: every storage of each target)')
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'Only backups with this tag')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Also show incomplete backups (no manifest: interrupted or failed runs)')
            [CompletionResult]::new('--deleted', '--deleted', [CompletionResultType]::ParameterName, 'Ransomware runbook: list the backups whose manifest a delete marker hides on a versioned S3 storage, whose old versions are still there (restore them with `restore --deleted`, or bring them back with `undelete`)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;verify' {
            [CompletionResult]::new('--storage', '--storage', [CompletionResultType]::ParameterName, 'Only this storage (default: every storage of the target)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Verify every backup, not only the latest')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the reports as JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;restore' {
            [CompletionResult]::new('--storage', '--storage', [CompletionResultType]::ParameterName, 'Read the backup from this storage (default: local storages first)')
            [CompletionResult]::new('--to-database', '--to-database', [CompletionResultType]::ParameterName, 'Restore into this database (created when missing) instead of the target''s')
            [CompletionResult]::new('--table', '--table', [CompletionResultType]::ParameterName, 'Restore only this table (`name` or `schema.name`, ClickHouse `db.table`); repeatable. PostgreSQL: custom-format dumps only')
            [CompletionResult]::new('--to-url', '--to-url', [CompletionResultType]::ParameterName, 'Redis/MongoDB: restore into this server instead of the target''s (`redis://[USER@]HOST:PORT`, `rediss://`, `mongodb://...`, also spelt --to-uri; password from REDISCLI_AUTH / MONGODB_PASSWORD, or the URL, where ps can see it)')
            [CompletionResult]::new('--to-uri', '--to-uri', [CompletionResultType]::ParameterName, 'Redis/MongoDB: restore into this server instead of the target''s (`redis://[USER@]HOST:PORT`, `rediss://`, `mongodb://...`, also spelt --to-uri; password from REDISCLI_AUTH / MONGODB_PASSWORD, or the URL, where ps can see it)')
            [CompletionResult]::new('--ns-include', '--ns-include', [CompletionResultType]::ParameterName, 'MongoDB: restore only the namespaces matching this pattern (`db.coll`, `db.*`; mongorestore --nsInclude); repeatable')
            [CompletionResult]::new('--ns-from', '--ns-from', [CompletionResultType]::ParameterName, 'MongoDB: rename namespaces matching this pattern (`app.users`, `$db$.$coll$`)...')
            [CompletionResult]::new('--ns-to', '--ns-to', [CompletionResultType]::ParameterName, '...to this one (`app.users_restored`, `copy_$db$.$coll$`)')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'Redis: restore only this logical database (repeatable; default: every one)')
            [CompletionResult]::new('--match', '--match', [CompletionResultType]::ParameterName, 'Redis: restore only the keys matching this glob (as KEYS/SCAN MATCH); never flushes')
            [CompletionResult]::new('--jobs', '--jobs', [CompletionResultType]::ParameterName, 'Parallel pg_restore jobs into a fresh database (default: the target''s restore_jobs, else 2)')
            [CompletionResult]::new('--temp-dir', '--temp-dir', [CompletionResultType]::ParameterName, 'Where to download remote backups before restoring (default: $TMPDIR)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--clean', '--clean', [CompletionResultType]::ParameterName, 'Drop the restored objects before recreating them, instead of refusing ones that exist and hold data (PostgreSQL custom format; plain dumps always do; Redis: the same as --flush; MongoDB: mongorestore --drop, also spelt --drop)')
            [CompletionResult]::new('--drop', '--drop', [CompletionResultType]::ParameterName, 'Drop the restored objects before recreating them, instead of refusing ones that exist and hold data (PostgreSQL custom format; plain dumps always do; Redis: the same as --flush; MongoDB: mongorestore --drop, also spelt --drop)')
            [CompletionResult]::new('--flush', '--flush', [CompletionResultType]::ParameterName, 'Redis: empty the destination (the databases restored) first; `--clean` is an alias')
            [CompletionResult]::new('--by-file', '--by-file', [CompletionResultType]::ParameterName, 'Redis: stop the target''s own server (`stop_command`), put the backup in place of its data file (and AOF), start it (`start_command`); the old file is kept until it answers')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Do not ask for confirmation')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Do not ask for confirmation')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print the plan and change nothing')
            [CompletionResult]::new('--no-check', '--no-check', [CompletionResultType]::ParameterName, 'Skip comparing restored row counts with the manifest')
            [CompletionResult]::new('--no-analyze', '--no-analyze', [CompletionResultType]::ParameterName, 'PostgreSQL: do not ANALYZE after the restore (the first queries then run on empty planner statistics until autovacuum gets round to them)')
            [CompletionResult]::new('--deleted', '--deleted', [CompletionResultType]::ParameterName, 'Ransomware runbook: restore from the versions a delete marker hides on a versioned S3 storage (with --storage; see `backup list --deleted`)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the outcome as JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;test-restore' {
            [CompletionResult]::new('--within', '--within', [CompletionResultType]::ParameterName, 'Only backups finished within this long (e.g. 30d); fails when the chosen one is older')
            [CompletionResult]::new('--report', '--report', [CompletionResultType]::ParameterName, 'Also write the report (JSON) to this file')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the report as JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;status' {
            [CompletionResult]::new('--max-age', '--max-age', [CompletionResultType]::ParameterName, 'Oldest acceptable newest backup, per target and storage (exit 7 when older; default: each target''s `max_age`, else 26h)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;prune' {
            [CompletionResult]::new('--storage', '--storage', [CompletionResultType]::ParameterName, 'Only this storage (default: every storage of each target)')
            [CompletionResult]::new('--now', '--now', [CompletionResultType]::ParameterName, 'Evaluate the policy as of this instant (UTC): 2026-12-01T02:00:00Z, 20261201T020000Z or 2026-12-01')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print the plan and delete nothing')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the plan (with each removal''s result) as a JSON array on stdout')
            [CompletionResult]::new('--extend-locks', '--extend-locks', [CompletionResultType]::ParameterName, 'Also extend the S3 Object Lock of every backup the policy keeps (and the WAL it needs) to a full lock period from now when less than half is left; never shortens')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Delete without asking (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Delete without asking (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;copy' {
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'Storage to read from (default: the target''s first storage)')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Storage to write to (default: every storage in the target''s `copy_to`)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Copy every complete backup the source holds (those already complete at the destination are skipped)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print what would be copied; write nothing')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the result as JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;undelete' {
            [CompletionResult]::new('--storage', '--storage', [CompletionResultType]::ParameterName, 'The versioned S3 storage the backups were deleted from')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print what would be brought back; change nothing')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Do not ask for confirmation')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Do not ask for confirmation')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the outcome as JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;pitr' {
            [CompletionResult]::new('--target-time', '--target-time', [CompletionResultType]::ParameterName, 'Recover up to this time (UTC unless a zone is given), e.g. 2026-11-24T14:05:00Z')
            [CompletionResult]::new('--target-name', '--target-name', [CompletionResultType]::ParameterName, 'Recover up to a restore point made with pg_create_restore_point()')
            [CompletionResult]::new('--target-xid', '--target-xid', [CompletionResultType]::ParameterName, 'Recover up to and including this transaction id')
            [CompletionResult]::new('--target-lsn', '--target-lsn', [CompletionResultType]::ParameterName, 'Recover up to this WAL location, e.g. 0/3000060')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'New, empty data directory to restore into')
            [CompletionResult]::new('--target-action', '--target-action', [CompletionResultType]::ParameterName, 'What the server does at the target: promote (default), pause or shutdown')
            [CompletionResult]::new('--timeline', '--timeline', [CompletionResultType]::ParameterName, 'recovery_target_timeline (default: latest)')
            [CompletionResult]::new('--backup', '--backup', [CompletionResultType]::ParameterName, 'Use this base backup (id or unique prefix) instead of the newest that fits')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port for the started server (with --start)')
            [CompletionResult]::new('--owner', '--owner', [CompletionResultType]::ParameterName, 'OS user that owns the data directory and runs the server (as root; default postgres)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up following recovery after this long (with --start), e.g. 30m')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--target-immediate', '--target-immediate', [CompletionResultType]::ParameterName, 'Recover only to the end of the base backup (the earliest consistent point)')
            [CompletionResult]::new('--target-latest', '--target-latest', [CompletionResultType]::ParameterName, 'Recover everything the archive holds, on the newest timeline (data-center loss); with --start, reports the last transaction reached: the recovery point achieved')
            [CompletionResult]::new('--start', '--start', [CompletionResultType]::ParameterName, 'Start the server, follow recovery and confirm it reached the target')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the outcome as JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;wal-push' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--background', '--background', [CompletionResultType]::ParameterName, 'Run as the background worker of `async = true` (started by wal-push itself)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;wal-fetch' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;check' {
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long to wait for the switched WAL segment to arrive, e.g. 60s')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;schedule' {
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'How many fire times to list per job')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'How many fire times to list per job')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'List fire times after this instant (RFC 3339, default now)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;daemon' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log lines as `key=value` text or as JSON lines')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;completions' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;man' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Folder to write backup.1 and backup-<command>.1 into')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only warnings and errors on stderr')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bars (log lines only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'backup;help' {
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Take a backup of a target and store it on every storage of the target')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List backups')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Read backups back from storage and check them (size, SHA-256, stream, tools)')
            [CompletionResult]::new('restore', 'restore', [CompletionResultType]::ParameterValue, 'Restore a backup into a database (verified before anything is touched)')
            [CompletionResult]::new('test-restore', 'test-restore', [CompletionResultType]::ParameterValue, 'Restore a backup into a scratch cluster, check it, and remove the scratch copy')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Are we backed up? Last good backup per target and storage, its age, last test-restore')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Remove backups the retention policy no longer keeps (prints the plan and why)')
            [CompletionResult]::new('copy', 'copy', [CompletionResultType]::ParameterValue, 'Copy backups from one storage to another (off-site copies), verified at the destination')
            [CompletionResult]::new('undelete', 'undelete', [CompletionResultType]::ParameterValue, 'Bring back backups hidden behind delete markers on a versioned S3 storage (ransomware runbook)')
            [CompletionResult]::new('pitr', 'pitr', [CompletionResultType]::ParameterValue, 'Restore a physical base backup and recover to a point in time (PostgreSQL PITR)')
            [CompletionResult]::new('wal-push', 'wal-push', [CompletionResultType]::ParameterValue, 'archive_command: store a WAL file in every storage of a target (exit 0 only when durable)')
            [CompletionResult]::new('wal-fetch', 'wal-fetch', [CompletionResultType]::ParameterValue, 'restore_command: fetch a WAL file (exit 0 fetched, 1 not archived, 126 storage or checksum error)')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Check a physical target''s WAL archiving end to end (forces a WAL switch)')
            [CompletionResult]::new('schedule', 'schedule', [CompletionResultType]::ParameterValue, 'Every scheduled job and its next fire times (check a config before deploying it)')
            [CompletionResult]::new('daemon', 'daemon', [CompletionResultType]::ParameterValue, 'Run every schedule in the foreground (for systemd and containers); /metrics, /healthz')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages into a folder')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'backup;help;run' {
            break
        }
        'backup;help;list' {
            break
        }
        'backup;help;verify' {
            break
        }
        'backup;help;restore' {
            break
        }
        'backup;help;test-restore' {
            break
        }
        'backup;help;status' {
            break
        }
        'backup;help;prune' {
            break
        }
        'backup;help;copy' {
            break
        }
        'backup;help;undelete' {
            break
        }
        'backup;help;pitr' {
            break
        }
        'backup;help;wal-push' {
            break
        }
        'backup;help;wal-fetch' {
            break
        }
        'backup;help;check' {
            break
        }
        'backup;help;schedule' {
            break
        }
        'backup;help;daemon' {
            break
        }
        'backup;help;completions' {
            break
        }
        'backup;help;man' {
            break
        }
        'backup;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}

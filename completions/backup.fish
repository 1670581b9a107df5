# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_backup_global_optspecs
    string join \n c/config= q/quiet no-progress h/help V/version
end

function __fish_backup_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_backup_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_backup_using_subcommand
    set -l cmd (__fish_backup_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c backup -n "__fish_backup_needs_command" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_needs_command" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_needs_command" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup -n "__fish_backup_needs_command" -s V -l version -d 'Print version'
complete -c backup -n "__fish_backup_needs_command" -f -a "run" -d 'Take a backup of a target and store it on every storage of the target'
complete -c backup -n "__fish_backup_needs_command" -f -a "list" -d 'List backups'
complete -c backup -n "__fish_backup_needs_command" -f -a "verify" -d 'Read backups back from storage and check them (size, SHA-256, stream, tools)'
complete -c backup -n "__fish_backup_needs_command" -f -a "restore" -d 'Restore a backup into a database (verified before anything is touched)'
complete -c backup -n "__fish_backup_needs_command" -f -a "test-restore" -d 'Restore a backup into a scratch cluster, check it, and remove the scratch copy'
complete -c backup -n "__fish_backup_needs_command" -f -a "status" -d 'Are we backed up? Last good backup per target and storage, its age, last test-restore'
complete -c backup -n "__fish_backup_needs_command" -f -a "prune" -d 'Remove backups the retention policy no longer keeps (prints the plan and why)'
complete -c backup -n "__fish_backup_needs_command" -f -a "copy" -d 'Copy backups from one storage to another (off-site copies), verified at the destination'
complete -c backup -n "__fish_backup_needs_command" -f -a "undelete" -d 'Bring back backups hidden behind delete markers on a versioned S3 storage (ransomware runbook)'
complete -c backup -n "__fish_backup_needs_command" -f -a "pitr" -d 'Restore a physical base backup and recover to a point in time (PostgreSQL PITR)'
complete -c backup -n "__fish_backup_needs_command" -f -a "wal-push" -d 'archive_command: store a WAL file in every storage of a target (exit 0 only when durable)'
complete -c backup -n "__fish_backup_needs_command" -f -a "wal-fetch" -d 'restore_command: fetch a WAL file (exit 0 fetched, 1 not archived, 126 storage or checksum error)'
complete -c backup -n "__fish_backup_needs_command" -f -a "check" -d 'Check a physical target\'s WAL archiving end to end (forces a WAL switch)'
complete -c backup -n "__fish_backup_needs_command" -f -a "schedule" -d 'Every scheduled job and its next fire times (check a config before deploying it)'
complete -c backup -n "__fish_backup_needs_command" -f -a "daemon" -d 'Run every schedule in the foreground (for systemd and containers); /metrics, /healthz'
complete -c backup -n "__fish_backup_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c backup -n "__fish_backup_needs_command" -f -a "man" -d 'Write man pages into a folder'
complete -c backup -n "__fish_backup_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backup -n "__fish_backup_using_subcommand run" -l tag -d 'Tag kept in the manifest and as an S3 object tag (e.g. pre-deployment-v1.2.3)' -r
complete -c backup -n "__fish_backup_using_subcommand run" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand run" -l json -d 'Print the result as JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand run" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand run" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand run" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand list" -l storage -d 'Only this storage (default: every storage of each target)' -r
complete -c backup -n "__fish_backup_using_subcommand list" -l tag -d 'Only backups with this tag' -r
complete -c backup -n "__fish_backup_using_subcommand list" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand list" -l all -d 'Also show incomplete backups (no manifest: interrupted or failed runs)'
complete -c backup -n "__fish_backup_using_subcommand list" -l deleted -d 'Ransomware runbook: list the backups whose manifest a delete marker hides on a versioned S3 storage, whose old versions are still there (restore them with `restore --deleted`, or bring them back with `undelete`)'
complete -c backup -n "__fish_backup_using_subcommand list" -l json -d 'Print a JSON array on stdout'
complete -c backup -n "__fish_backup_using_subcommand list" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand list" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand list" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand verify" -l storage -d 'Only this storage (default: every storage of the target)' -r
complete -c backup -n "__fish_backup_using_subcommand verify" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand verify" -l all -d 'Verify every backup, not only the latest'
complete -c backup -n "__fish_backup_using_subcommand verify" -l json -d 'Print the reports as JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand verify" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand verify" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand verify" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand restore" -l storage -d 'Read the backup from this storage (default: local storages first)' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l to-database -d 'Restore into this database (created when missing) instead of the target\'s' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l table -d 'Restore only this table (`name` or `schema.name`, ClickHouse `db.table`); repeatable. PostgreSQL: custom-format dumps only' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l to-url -l to-uri -d 'Redis/MongoDB: restore into this server instead of the target\'s (`redis://[USER@]HOST:PORT`, `rediss://`, `mongodb://...`, also spelt --to-uri; password from REDISCLI_AUTH / MONGODB_PASSWORD, or the URL, where ps can see it)' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l ns-include -d 'MongoDB: restore only the namespaces matching this pattern (`db.coll`, `db.*`; mongorestore --nsInclude); repeatable' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l ns-from -d 'MongoDB: rename namespaces matching this pattern (`app.users`, `$db$.$coll$`)...' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l ns-to -d '...to this one (`app.users_restored`, `copy_$db$.$coll$`)' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l db -d 'Redis: restore only this logical database (repeatable; default: every one)' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l match -d 'Redis: restore only the keys matching this glob (as KEYS/SCAN MATCH); never flushes' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l jobs -d 'Parallel pg_restore jobs into a fresh database (default: the target\'s restore_jobs, else 2)' -r
complete -c backup -n "__fish_backup_using_subcommand restore" -l temp-dir -d 'Where to download remote backups before restoring (default: $TMPDIR)' -r -F
complete -c backup -n "__fish_backup_using_subcommand restore" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand restore" -l clean -l drop -d 'Drop the restored objects before recreating them, instead of refusing ones that exist and hold data (PostgreSQL custom format; plain dumps always do; Redis: the same as --flush; MongoDB: mongorestore --drop, also spelt --drop)'
complete -c backup -n "__fish_backup_using_subcommand restore" -l flush -d 'Redis: empty the destination (the databases restored) first; `--clean` is an alias'
complete -c backup -n "__fish_backup_using_subcommand restore" -l by-file -d 'Redis: stop the target\'s own server (`stop_command`), put the backup in place of its data file (and AOF), start it (`start_command`); the old file is kept until it answers'
complete -c backup -n "__fish_backup_using_subcommand restore" -s y -l yes -d 'Do not ask for confirmation'
complete -c backup -n "__fish_backup_using_subcommand restore" -l dry-run -d 'Print the plan and change nothing'
complete -c backup -n "__fish_backup_using_subcommand restore" -l no-check -d 'Skip comparing restored row counts with the manifest'
complete -c backup -n "__fish_backup_using_subcommand restore" -l no-analyze -d 'PostgreSQL: do not ANALYZE after the restore (the first queries then run on empty planner statistics until autovacuum gets round to them)'
complete -c backup -n "__fish_backup_using_subcommand restore" -l deleted -d 'Ransomware runbook: restore from the versions a delete marker hides on a versioned S3 storage (with --storage; see `backup list --deleted`)'
complete -c backup -n "__fish_backup_using_subcommand restore" -l json -d 'Print the outcome as JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand restore" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand restore" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand restore" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand test-restore" -l within -d 'Only backups finished within this long (e.g. 30d); fails when the chosen one is older' -r
complete -c backup -n "__fish_backup_using_subcommand test-restore" -l report -d 'Also write the report (JSON) to this file' -r -F
complete -c backup -n "__fish_backup_using_subcommand test-restore" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand test-restore" -l json -d 'Print the report as JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand test-restore" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand test-restore" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand test-restore" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand status" -l max-age -d 'Oldest acceptable newest backup, per target and storage (exit 7 when older; default: each target\'s `max_age`, else 26h)' -r
complete -c backup -n "__fish_backup_using_subcommand status" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand status" -l json -d 'Print JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand status" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand status" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand status" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand prune" -l storage -d 'Only this storage (default: every storage of each target)' -r
complete -c backup -n "__fish_backup_using_subcommand prune" -l now -d 'Evaluate the policy as of this instant (UTC): 2026-12-01T02:00:00Z, 20261201T020000Z or 2026-12-01' -r
complete -c backup -n "__fish_backup_using_subcommand prune" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand prune" -l dry-run -d 'Print the plan and delete nothing'
complete -c backup -n "__fish_backup_using_subcommand prune" -l json -d 'Print the plan (with each removal\'s result) as a JSON array on stdout'
complete -c backup -n "__fish_backup_using_subcommand prune" -l extend-locks -d 'Also extend the S3 Object Lock of every backup the policy keeps (and the WAL it needs) to a full lock period from now when less than half is left; never shortens'
complete -c backup -n "__fish_backup_using_subcommand prune" -s y -l yes -d 'Delete without asking (needed when stdin is not a terminal)'
complete -c backup -n "__fish_backup_using_subcommand prune" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand prune" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand prune" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand copy" -l from -d 'Storage to read from (default: the target\'s first storage)' -r
complete -c backup -n "__fish_backup_using_subcommand copy" -l to -d 'Storage to write to (default: every storage in the target\'s `copy_to`)' -r
complete -c backup -n "__fish_backup_using_subcommand copy" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand copy" -l all -d 'Copy every complete backup the source holds (those already complete at the destination are skipped)'
complete -c backup -n "__fish_backup_using_subcommand copy" -l dry-run -d 'Print what would be copied; write nothing'
complete -c backup -n "__fish_backup_using_subcommand copy" -l json -d 'Print the result as JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand copy" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand copy" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand copy" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand undelete" -l storage -d 'The versioned S3 storage the backups were deleted from' -r
complete -c backup -n "__fish_backup_using_subcommand undelete" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand undelete" -l dry-run -d 'Print what would be brought back; change nothing'
complete -c backup -n "__fish_backup_using_subcommand undelete" -s y -l yes -d 'Do not ask for confirmation'
complete -c backup -n "__fish_backup_using_subcommand undelete" -l json -d 'Print the outcome as JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand undelete" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand undelete" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand undelete" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand pitr" -l target-time -d 'Recover up to this time (UTC unless a zone is given), e.g. 2026-11-24T14:05:00Z' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l target-name -d 'Recover up to a restore point made with pg_create_restore_point()' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l target-xid -d 'Recover up to and including this transaction id' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l target-lsn -d 'Recover up to this WAL location, e.g. 0/3000060' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l data-dir -d 'New, empty data directory to restore into' -r -F
complete -c backup -n "__fish_backup_using_subcommand pitr" -l target-action -d 'What the server does at the target: promote (default), pause or shutdown' -r -f -a "promote\t''
pause\t''
shutdown\t''"
complete -c backup -n "__fish_backup_using_subcommand pitr" -l timeline -d 'recovery_target_timeline (default: latest)' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l backup -d 'Use this base backup (id or unique prefix) instead of the newest that fits' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l port -d 'Port for the started server (with --start)' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l owner -d 'OS user that owns the data directory and runs the server (as root; default postgres)' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -l timeout -d 'Give up following recovery after this long (with --start), e.g. 30m' -r
complete -c backup -n "__fish_backup_using_subcommand pitr" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand pitr" -l target-immediate -d 'Recover only to the end of the base backup (the earliest consistent point)'
complete -c backup -n "__fish_backup_using_subcommand pitr" -l target-latest -d 'Recover everything the archive holds, on the newest timeline (data-center loss); with --start, reports the last transaction reached: the recovery point achieved'
complete -c backup -n "__fish_backup_using_subcommand pitr" -l start -d 'Start the server, follow recovery and confirm it reached the target'
complete -c backup -n "__fish_backup_using_subcommand pitr" -l json -d 'Print the outcome as JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand pitr" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand pitr" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand pitr" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand wal-push" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand wal-push" -l background -d 'Run as the background worker of `async = true` (started by wal-push itself)'
complete -c backup -n "__fish_backup_using_subcommand wal-push" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand wal-push" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand wal-push" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand wal-fetch" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand wal-fetch" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand wal-fetch" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand wal-fetch" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand check" -l timeout -d 'How long to wait for the switched WAL segment to arrive, e.g. 60s' -r
complete -c backup -n "__fish_backup_using_subcommand check" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand check" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand check" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand check" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand schedule" -s n -l count -d 'How many fire times to list per job' -r
complete -c backup -n "__fish_backup_using_subcommand schedule" -l from -d 'List fire times after this instant (RFC 3339, default now)' -r
complete -c backup -n "__fish_backup_using_subcommand schedule" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand schedule" -l json -d 'Print JSON on stdout'
complete -c backup -n "__fish_backup_using_subcommand schedule" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand schedule" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand schedule" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand daemon" -l log-format -d 'Log lines as `key=value` text or as JSON lines' -r -f -a "text\t''
json\t''"
complete -c backup -n "__fish_backup_using_subcommand daemon" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand daemon" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand daemon" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand completions" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand completions" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand completions" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand completions" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand man" -l out -d 'Folder to write backup.1 and backup-<command>.1 into' -r -F
complete -c backup -n "__fish_backup_using_subcommand man" -s c -l config -d 'Configuration file (default: $BACKUP_CONFIG, ./backup.toml, /etc/backup/backup.toml)' -r -F
complete -c backup -n "__fish_backup_using_subcommand man" -s q -l quiet -d 'Only warnings and errors on stderr'
complete -c backup -n "__fish_backup_using_subcommand man" -l no-progress -d 'No progress bars (log lines only)'
complete -c backup -n "__fish_backup_using_subcommand man" -s h -l help -d 'Print help'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "run" -d 'Take a backup of a target and store it on every storage of the target'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "list" -d 'List backups'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "verify" -d 'Read backups back from storage and check them (size, SHA-256, stream, tools)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "restore" -d 'Restore a backup into a database (verified before anything is touched)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "test-restore" -d 'Restore a backup into a scratch cluster, check it, and remove the scratch copy'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "status" -d 'Are we backed up? Last good backup per target and storage, its age, last test-restore'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "prune" -d 'Remove backups the retention policy no longer keeps (prints the plan and why)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "copy" -d 'Copy backups from one storage to another (off-site copies), verified at the destination'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "undelete" -d 'Bring back backups hidden behind delete markers on a versioned S3 storage (ransomware runbook)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "pitr" -d 'Restore a physical base backup and recover to a point in time (PostgreSQL PITR)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "wal-push" -d 'archive_command: store a WAL file in every storage of a target (exit 0 only when durable)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "wal-fetch" -d 'restore_command: fetch a WAL file (exit 0 fetched, 1 not archived, 126 storage or checksum error)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "check" -d 'Check a physical target\'s WAL archiving end to end (forces a WAL switch)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "schedule" -d 'Every scheduled job and its next fire times (check a config before deploying it)'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "daemon" -d 'Run every schedule in the foreground (for systemd and containers); /metrics, /healthz'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "completions" -d 'Print a shell completion script'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "man" -d 'Write man pages into a folder'
complete -c backup -n "__fish_backup_using_subcommand help; and not __fish_seen_subcommand_from run list verify restore test-restore status prune copy undelete pitr wal-push wal-fetch check schedule daemon completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

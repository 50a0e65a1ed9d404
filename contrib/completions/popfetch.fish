# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_popfetch_global_optspecs
    string join \n c/config= v/verbose q/quiet h/help V/version
end

function __fish_popfetch_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_popfetch_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_popfetch_using_subcommand
    set -l cmd (__fish_popfetch_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c popfetch -n "__fish_popfetch_needs_command" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_needs_command" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_needs_command" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_needs_command" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_needs_command" -s V -l version -d 'Print version'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "fetch" -d 'Poll the named accounts (default: all) once, deliver new mail, and exit'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "check" -d 'Validate the config and all it names short of the network, and print the effective settings (secrets redacted); with --connect, look at the servers instead'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "daemon" -d 'Run in the foreground, polling every account on its schedule, until SIGTERM or SIGINT'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "status" -d 'Show each account\'s health, last poll, errors, mail waiting and next poll, from the state directory (no daemon needed)'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "retry" -d 'Try again the messages held on the server after a permanent delivery failure'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "oauth2-authorize" -d 'Authorize popfetch at the account\'s OAuth2 provider and store the refresh token'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "import" -d 'Switch from fetchmail, getmail6 or mpop: print an equivalent config and record the messages they already fetched'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand fetch" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand fetch" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand fetch" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand fetch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand check" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand check" -l connect -d 'Connect to the servers and show what is there, changing nothing'
complete -c popfetch -n "__fish_popfetch_using_subcommand check" -l json -d 'With --connect: print JSON, an array with one object per account, for scripts'
complete -c popfetch -n "__fish_popfetch_using_subcommand check" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand check" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -l json -d 'Print JSON for scripts: {"schema": 2, "config", "config_error", "state_dir", "accounts": [...]}; the fields are in popfetch(1), STATUS'
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand retry" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand retry" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand retry" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand retry" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth2-authorize" -l flow -d 'The flow to use [default: the account\'s `oauth2.flow`, else the provider\'s]' -r -f -a "device\t'RFC 8628 device authorization: a code to enter on any device with a browser'
browser\t'Authorization code with PKCE: a URL to open, the answer caught on a loopback port or pasted back'"
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth2-authorize" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth2-authorize" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth2-authorize" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth2-authorize" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -f -a "fetchmail" -d 'From fetchmail: the rc file and its UIDL file (.fetchids)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -f -a "getmail" -d 'From getmail6: rc files and the oldmail-* files of the getmail directory'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -f -a "mpop" -d 'From mpop: the rc file and each account\'s UIDLs file'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and not __fish_seen_subcommand_from fetchmail getmail mpop help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from fetchmail" -l ids -d 'fetchmail\'s UIDL file [default: the rc file\'s `set idfile`, else ~/.fetchids]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from fetchmail" -l state-dir -d 'Where to record the state; also written into the config as `state_dir` [default: the state directory popfetch uses without one]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from fetchmail" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from fetchmail" -l dry-run -d 'Print the config and what would be recorded, and change nothing'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from fetchmail" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from fetchmail" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from fetchmail" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from getmail" -l getmaildir -d 'The getmail directory [default: ~/.getmail]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from getmail" -l state-dir -d 'Where to record the state; also written into the config as `state_dir` [default: the state directory popfetch uses without one]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from getmail" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from getmail" -l dry-run -d 'Print the config and what would be recorded, and change nothing'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from getmail" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from getmail" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from getmail" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from mpop" -l state-dir -d 'Where to record the state; also written into the config as `state_dir` [default: the state directory popfetch uses without one]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from mpop" -s c -l config -d 'Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml, else /etc/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from mpop" -l dry-run -d 'Print the config and what would be recorded, and change nothing'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from mpop" -s v -l verbose -d 'Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or RUST_LOG override)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from mpop" -s q -l quiet -d 'No progress display and no summary lines; errors only'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from mpop" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "fetchmail" -d 'From fetchmail: the rc file and its UIDL file (.fetchids)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "getmail" -d 'From getmail6: rc files and the oldmail-* files of the getmail directory'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "mpop" -d 'From mpop: the rc file and each account\'s UIDLs file'
complete -c popfetch -n "__fish_popfetch_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "fetch" -d 'Poll the named accounts (default: all) once, deliver new mail, and exit'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "check" -d 'Validate the config and all it names short of the network, and print the effective settings (secrets redacted); with --connect, look at the servers instead'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "daemon" -d 'Run in the foreground, polling every account on its schedule, until SIGTERM or SIGINT'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "status" -d 'Show each account\'s health, last poll, errors, mail waiting and next poll, from the state directory (no daemon needed)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "retry" -d 'Try again the messages held on the server after a permanent delivery failure'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "oauth2-authorize" -d 'Authorize popfetch at the account\'s OAuth2 provider and store the refresh token'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "import" -d 'Switch from fetchmail, getmail6 or mpop: print an equivalent config and record the messages they already fetched'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from fetch check daemon status retry oauth2-authorize import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "fetchmail" -d 'From fetchmail: the rc file and its UIDL file (.fetchids)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "getmail" -d 'From getmail6: rc files and the oldmail-* files of the getmail directory'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "mpop" -d 'From mpop: the rc file and each account\'s UIDLs file'

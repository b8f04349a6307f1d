# services.ccci: the janitor of a CI host (a systemd service and timer
# running ccci-janitor-pass as the CI user), the tmpfiles rule for the CI
# user's lock dir, and the one configuration file /etc/ccci/ccci.conf that
# every runner's job and the janitor read. Written from the NixOS manual's
# module conventions (options, then config under mkIf cfg.enable); checked
# here only by `nix-instantiate --parse`, not evaluated against nixpkgs.
{ self }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.ccci;
  inherit (lib) mkEnableOption mkIf mkOption types;

  user = config.users.users.${cfg.ciUser};
  home = user.home;

  # KEY='VALUE' lines: read alike by sh and by systemd's EnvironmentFile=,
  # as the tools require (docs/configuration.md).
  render = settings: lib.concatStrings (lib.mapAttrsToList
    (key: value: "${key}='${toString value}'\n")
    settings);
  badValues = lib.filterAttrs
    (_: value: lib.hasInfix "'" (toString value) || lib.hasInfix "\n" (toString value))
    cfg.settings;
in
{
  options.services.ccci = {
    enable = mkEnableOption "the ccci janitor, which reaps the abra apps of CI runs that died";

    package = mkOption {
      type = types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.ccci;
      defaultText = lib.literalExpression "ccci.packages.\${system}.ccci";
      description = "The ccci package.";
    };

    ciUser = mkOption {
      type = types.str;
      example = "ci";
      description = ''
        The user every CI run and the janitor run as (the lock dir is per
        user). Its home holds abra's ~/.abra and, from abra's installer,
        ~/.local/bin/abra.
      '';
    };

    ciUid = mkOption {
      type = types.int;
      default = user.uid;
      defaultText = lib.literalExpression "config.users.users.\${ciUser}.uid";
      description = "The CI user's uid: the lock dir is /run/lock/ccci-<uid>.";
    };

    settings = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.path ]);
      default = { };
      example = {
        CCCI_ONLY = "????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org";
        CCCI_WARM = "warm-*";
      };
      description = ''
        The keys of /etc/ccci/ccci.conf (docs/configuration.md), each written
        single-quoted. CCCI_ONLY, the domains CI runs deploy, is required.
      '';
    };

    interval = mkOption {
      type = types.str;
      default = "5min";
      description = "How often the janitor passes run (systemd.time(7)).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.settings ? CCCI_ONLY;
        message = "services.ccci.settings.CCCI_ONLY must name the domains CI runs deploy";
      }
      {
        assertion = lib.all (lib.hasPrefix "CCCI_") (lib.attrNames cfg.settings);
        message = "services.ccci.settings: every key is a CCCI_* key of docs/configuration.md";
      }
      {
        assertion = badValues == { };
        message = "services.ccci.settings: a value holds a quote or a newline: ${toString (lib.attrNames badValues)}";
      }
    ];

    environment.systemPackages = [ cfg.package ];

    # A mode makes NixOS copy the file instead of linking it into the store:
    # the tools refuse a configuration file that is a symlink.
    environment.etc."ccci/ccci.conf" = {
      mode = "0644";
      text = "# Written by the NixOS module services.ccci.\n" + render cfg.settings;
    };

    systemd.tmpfiles.rules = [
      "d /run/lock/ccci-${toString cfg.ciUid} 0700 ${cfg.ciUser} ${user.group} -"
    ];

    systemd.services.ccci-janitor = {
      description = "ccci janitor: reap apps of dead CI runs";
      documentation = [ "man:ccci-janitor-pass(8)" "man:ccci-janitor(1)" ];
      after = [ "local-fs.target" "network-online.target" ];
      wants = [ "network-online.target" ];
      # PATH: the tools, the CI user's ~/.local/bin (abra's installer), the
      # user's profile, the system's.
      path = [
        cfg.package
        pkgs.jq
        pkgs.coreutils
        "${home}/.local"
        "/etc/profiles/per-user/${cfg.ciUser}"
        "/run/current-system/sw"
      ];
      environment.HOME = home;
      serviceConfig = {
        Type = "oneshot";
        User = cfg.ciUser;
        Group = user.group;
        ExecStart = "${cfg.package}/lib/ccci/ccci-janitor-pass";
        TimeoutStartSec = "1h";
        Nice = 10;
      };
    };

    systemd.timers.ccci-janitor = {
      description = "Run the ccci janitor every ${cfg.interval}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "2min";
        OnUnitActiveSec = cfg.interval;
        AccuracySec = "30s";
      };
    };
  };
}

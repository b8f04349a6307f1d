# ccci as a flake: the package (the five tools, the janitor's scripts, their
# man pages and docs) and a NixOS module (services.ccci). Use it from this
# directory of your clone of this repository, e.g. in the host's flake:
#
#   inputs.ccci.url = "git+file:///path/to/ccci?dir=contrib/nix";
#   modules = [ inputs.ccci.nixosModules.default {
#     services.ccci = {
#       enable = true;
#       ciUser = "ci";
#       settings.CCCI_ONLY = "????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org";
#     };
#   } ];
#
# Checked here only by `nix-instantiate --parse` (make check); it was not
# evaluated against nixpkgs. See README.md beside it.
{
  description = "ccci: concurrency-safe building blocks for a shell CI harness deploying abra apps";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The whole repository: this flake lives in its contrib/nix.
      src = ../..;
    in
    {
      packages = forAllSystems (pkgs: rec {
        ccci = pkgs.callPackage ./package.nix { inherit src; };
        default = ccci;
      });

      overlays.default = final: _prev: {
        ccci = final.callPackage ./package.nix { inherit src; };
      };

      nixosModules.ccci = import ./module.nix { inherit self; };
      nixosModules.default = self.nixosModules.ccci;
    };
}

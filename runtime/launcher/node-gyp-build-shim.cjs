// Stands in for node-gyp-build inside a bundle: fuse-native's addon comes from the directory
// the launcher extracted the bundle's native addons to.
module.exports = function load() {
  return globalThis.__overpackLoadAddon('fuse-native.node');
};

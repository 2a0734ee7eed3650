'use strict';
const fs = require('fs');
const path = require('path');

// Inside a bundle the app's own directory is the writable overlay.
const file = path.join(__dirname, '..', 'settings.json');

exports.load = () => (fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : {});
exports.save = (settings) => fs.writeFileSync(file, JSON.stringify(settings, null, 2) + '\n');

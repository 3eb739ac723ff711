"""Reading and writing Caffe's files: prototxt, binaryproto, caffemodel, solverstate; upgrades."""

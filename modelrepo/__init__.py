"""A trained model's folder, the unit the Hub stores: the weights and their config, the
out-of-distribution detector fitted to them, the evaluation artefacts, the model card; and the
Hub side (ids, bounded downloads, the push). `folder.open_model` is the one loader of a folder or a
repo id; everything above model.py goes through it."""

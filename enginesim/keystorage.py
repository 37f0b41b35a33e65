"""What the engine builds from an imported config, and how it looks keys up in it.

Mirrors, in order, dagger's manager.Import (a descriptor per layer, which needs annotations
and a diffID), buildkit's ParseConfig (record and layer indexes in range, no loop through
`inputs` or `parent`), CacheChains (a random: record becomes a no-op and links from it
vanish; the last result of a record wins) and NewCacheKeyStorage (an input-less item is
stored under its digest, a later one with the same digest replacing it and the links made to
it so far). Lookups follow the solver: a root by ID, a dependent by walking links
(input index, digest, selector) from keys its inputs matched, for every input.
"""

from dataclasses import dataclass, field

from enginesim.goconfig import CacheConfig, ConfigError

NOP = object()  # what CacheChains.Add returns for a random: digest


@dataclass
class Item:
    digest: str
    links: list = field(default_factory=list)  # per input index: {(source Item, selector)}
    result: list | None = None  # layer chain, base first, as CacheLayer entries


@dataclass
class StoredKey:
    item: Item
    links: dict = field(default_factory=dict)  # (input, digest, selector) -> [ids]


@dataclass
class KeyStorage:
    by_id: dict
    items: list
    notes: list  # service-side faults that do not fail the import

    def exists(self, key_id):
        return key_id in self.by_id

    def walk_links(self, key_id, input_index, digest, selector):
        stored = self.by_id.get(key_id)
        if stored is None:
            return []
        return stored.links.get((input_index, digest, selector), [])


def descriptor_checks(config: CacheConfig):
    """manager.descriptorProviderPair for every layer; returns {blob: CacheLayer}."""
    provider = {}
    for layer in config.layers:
        if layer.annotations is None:
            raise ConfigError(f"missing annotations for layer {layer.blob}")
        if layer.annotations.diff_id == "":
            raise ConfigError(f"missing diffID for layer {layer.blob}")
        provider[layer.blob] = layer
    return provider


def parse_config(config: CacheConfig):
    """ParseConfig into CacheChains: returns the items in the order Add was called."""
    provider = descriptor_checks(config)
    items = []
    cache = {}

    def add(digest):
        if digest.startswith("random:"):
            return NOP
        item = Item(digest)
        items.append(item)
        return item

    def remote_chain(index, visited):
        if index in visited:
            raise ConfigError("invalid looping layer")
        visited.add(index)
        if index < 0 or index >= len(config.layers):
            raise ConfigError(f"invalid layer index {index}")
        layer = config.layers[index]
        if layer.blob not in provider:
            return None
        if layer.parent == -1:
            return [layer]
        parent = remote_chain(layer.parent, visited)
        return None if parent is None else parent + [layer]

    def parse_record(index):
        if index in cache:
            if cache[index] is None:
                raise ConfigError("invalid looping record")
            return cache[index]
        if index < 0 or index >= len(config.records):
            raise ConfigError(f"invalid record ID: {index}")
        record = config.records[index]
        item = add(record.digest)
        cache[index] = None
        for input_index, alternatives in enumerate(record.inputs):
            for alt in alternatives:
                source = parse_record(alt.link)
                if item is NOP or source is NOP:
                    continue
                while len(item.links) <= input_index:
                    item.links.append(set())
                item.links[input_index].add((id(source), alt.selector))
        for result in record.results:
            chain = remote_chain(result.layer, set())
            if chain is not None and item is not NOP:
                item.result = chain
        for chained in record.chains:
            chain = []
            for layer_index in chained.layers:
                if layer_index < 0 or layer_index >= len(config.layers):
                    raise ConfigError(f"invalid layer index {layer_index}")
                layer = config.layers[layer_index]
                if layer.blob not in provider:
                    chain = None
                    break
                chain.append(layer)
            if chain is not None and item is not NOP:
                item.result = chain
        cache[index] = item
        return item

    for index in range(len(config.records)):
        parse_record(index)
    return items


def key_storage(config: CacheConfig) -> KeyStorage:
    items = parse_config(config)
    by_object = {id(item): item for item in items}
    by_id = {}
    by_item = {}
    counter = iter(range(10**9))

    def add_item(item):
        if id(item) in by_item:
            key_id = by_item[id(item)]
            if key_id == "":
                raise ConfigError("invalid loop")
            return by_id[key_id]
        key_id = item.digest if not item.links else f"imported-{next(counter)}"
        by_item[id(item)] = ""
        for input_index, alternatives in enumerate(item.links):
            for source_id, selector in alternatives:
                source = add_item(by_object[source_id])
                source.links.setdefault((input_index, item.digest, selector), []).append(key_id)
        stored = StoredKey(item)
        by_id[key_id] = stored
        by_item[id(item)] = key_id
        return stored

    for item in items:
        add_item(item)
    return KeyStorage(by_id, items, service_notes(config))


def service_notes(config: CacheConfig):
    """Things a correct service never emits, though the engine copes with them."""
    notes = []
    roots = {}
    for index, record in enumerate(config.records):
        if record.digest.startswith("random:"):
            notes.append(f"record {index} has a random: digest (never exported by a correct service)")
        if not any(record.inputs) and not record.digest.startswith("random:"):
            if record.digest in roots:
                notes.append(
                    f"records {roots[record.digest]} and {index} are both roots with digest {record.digest}: "
                    "the engine keeps only the last one and drops links to the first"
                )
            roots.setdefault(record.digest, index)
        if len(record.results) + len(record.chains) > 1:
            notes.append(f"record {index} has {len(record.results) + len(record.chains)} results; the engine keeps the last")
    return notes

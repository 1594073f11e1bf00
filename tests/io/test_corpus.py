import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from openmed_ray.io.corpus import read_parquet_dataset


def test_the_ray_dataset_holds_the_columns_of_every_file_and_leaves_the_context_alone(
    ray_local, tmp_path
):
    import ray.data

    for k in range(3):
        ids = [f"d{k}-{i}" for i in range(50)]
        pq.write_table(
            pa.table({"doc_id": ids, "text": ids, "extra": list(range(50))}),
            tmp_path / f"in-{k}.parquet",
        )
    context = ray.data.DataContext.get_current()
    context.use_datasource_v2 = True  # a caller's choice for its own reads
    files = sorted(str(p) for p in tmp_path.glob("*.parquet"))
    for paths in (files, str(tmp_path)):  # a file list (annotate, kg) or a directory (dapt)
        table = pa.concat_tables(
            read_parquet_dataset(paths, pafs.LocalFileSystem(), ["doc_id", "text"]).iter_batches(
                batch_format="pyarrow", batch_size=None
            )
        )
        assert table.column_names == ["doc_id", "text"]
        assert sorted(table.column("doc_id").to_pylist()) == sorted(
            f"d{k}-{i}" for k in range(3) for i in range(50)
        )
    assert context.use_datasource_v2 is True

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return {"y": inputs["x"].sum(axis=1)}
